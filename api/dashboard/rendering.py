"""What every dashboard page shares: rendering a template, showing a refusal, and the session it needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.response import Redirect, Template

from api.dashboard import views
from api.dashboard.session import SESSION_COOKIE, LoginRequired, page_account, renewed_cookie
from api.errors import DOMAIN_ERRORS, ApiError, handle_http_exception
from api.input_errors import InvalidInput
from api.security_headers import NO_STORE
from api.services.prompt_templates import variables
from domain.key_settings import CAP_PERIODS
from domain.bounds import MAX_LABEL_LENGTH
from domain.invite import SignupRefused
from domain.quota import QuotaExceeded
from domain.ratelimit import RateLimited

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
HTMX = "vendor/htmx-2.0.11/htmx.min.js"
JSON_PATHS = ("/api/", "/v1/", "/admin/")  # answered in JSON whatever the client accepts
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
    operator_nav = getattr(request.state, "operator", False)  # the signed-in account is an operator's
    return Template(
        template_name=name,
        context={"request": request, "htmx": HTMX, "operator_nav": operator_nav, **context},
        cookies=renewed_cookie(request),
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
    return error_page(request, status, failure(exc), _section(request))


# the dashboard's sections by path, with their names in the navigation (base.html)
SECTIONS = {
    "keys": "API Keys",
    "billing": "Billing",
    "logs": "Logs",
    "models": "Models",
    "templates": "Templates",
    "webhooks": "Webhooks",
}


def _section(request: Request) -> str | None:
    first = request.url.path.strip("/").split("/", 1)[0]
    return first if first in SECTIONS or first == OPERATOR_SECTION else None


OPERATOR_SECTION = "operator"  # the operators' pages (api/dashboard/operator_pages.py), for operators only


def error_page(request: Request, status: int, message: str, section: str | None) -> Template:
    """A refusal in the dashboard's layout: the sections to go on to (when the visitor has a session), and Back."""
    operator_nav = getattr(request.state, "operator", False)
    return Template(
        template_name="error.html",
        status_code=status,
        context={
            "request": request,
            "htmx": HTMX,
            "message": message,
            "section": section,
            "operator_nav": operator_nav,
        },
    )


def not_found(request: Request, exc: NotFoundException) -> Response:
    """A page a browser asks for that does not exist is an HTML page; the API, `/v1` and a client that does not
    ask for HTML get the API's JSON error."""
    path = request.url.path
    if "text/html" not in request.headers.get("accept", "") or path.startswith(JSON_PATHS):
        return handle_http_exception(request, exc)
    signed_in = bool(request.cookies.get(SESSION_COOKIE))
    return error_page(request, 404, f"There is no page at {path[:200]}.", "" if signed_in else None)


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
    engine.engine.globals.update(
        needs_of=variables, label_max=MAX_LABEL_LENGTH, cap_periods=CAP_PERIODS, sections=SECTIONS
    )
    return engine
