"""What every dashboard page shares: rendering a template, showing a refusal, and the session it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response
from litestar.di import Provide
from litestar.response import Redirect, Template

from api.dashboard import views
from api.dashboard.session import LoginRequired, page_account, renewed_cookie
from api.errors import DOMAIN_ERRORS, ApiError
from api.input_errors import InvalidInput
from api.security_headers import NO_STORE
from api.services.prompt_templates import variables
from domain.invite import SignupRefused
from domain.quota import QuotaExceeded
from domain.ratelimit import RateLimited

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
HTMX = "vendor/htmx-2.0.11/htmx.min.js"
PAGE_ERRORS = (
    ApiError,
    InvalidInput,
    RateLimited,
    SignupRefused,
    QuotaExceeded,
    *DOMAIN_ERRORS,
)  # shown on the page, in the API's words


def failure(exc: Exception) -> str:
    """What went wrong, in the API's own words."""
    return exc.message if isinstance(exc, ApiError) else str(exc)


def page(name: str, request: Request, **context: Any) -> Template:
    return Template(
        template_name=name, context={"request": request, "htmx": HTMX, **context}, cookies=renewed_cookie(request)
    )


def _login_required(request: Request, _: LoginRequired) -> Response:
    if request.headers.get("hx-request"):
        return Response(content="", status_code=401, headers={"HX-Redirect": "/login"})
    return Redirect("/login")


def _page_error(request: Request, exc: Exception) -> Response:
    status = (
        exc.status
        if isinstance(exc, ApiError)
        else 429
        if isinstance(exc, RateLimited)
        else 403
        if isinstance(exc, (SignupRefused, QuotaExceeded))
        else next((s for cls, (s, _) in DOMAIN_ERRORS.items() if isinstance(exc, cls)), 400)
    )
    return Template(
        template_name="error.html",
        status_code=status,
        context={"request": request, "htmx": HTMX, "message": failure(exc), "section": None},
    )


class SessionPages(Controller):
    """A section's pages: every one needs a session, shows a refusal as a page, and is never stored (Back after
    Log out asks the server again, which sends the visitor to /login)."""

    cache_control = NO_STORE
    dependencies = {"account_id": Provide(page_account)}
    exception_handlers = {LoginRequired: _login_required, **{cls: _page_error for cls in PAGE_ERRORS}}
    include_in_schema = False


def dashboard_templates():
    """The Jinja engine with the view helpers as filters."""
    from litestar.plugins.jinja import JinjaTemplateEngine

    engine = JinjaTemplateEngine(directory=TEMPLATES)
    engine.engine.filters.update(views.FILTERS)
    engine.engine.globals.update(needs_of=variables)
    return engine
