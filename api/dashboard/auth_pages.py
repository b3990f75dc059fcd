"""Sign up, log in, log out: the pages that need no session."""

from __future__ import annotations

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_301_MOVED_PERMANENTLY

from api.client_address import client_address
from api.dashboard.rendering import PAGE_ERRORS, failure, page
from api.dashboard.session import (
    SESSION_COOKIE,
    LoginRequired,
    expired_cookie,
    page_account,
    session_cookie,
    session_seconds,
)
from api.security_headers import NO_STORE
from api.services.accounts import AccountService
from domain.credentials import hash_token


class AuthPages(Controller):
    """Sign up, log in, log out: no session needed."""

    @get("/", include_in_schema=False)
    async def home(self, request: Request, account_service: NamedDependency[AccountService]) -> Redirect:
        try:
            await page_account(request, account_service)
        except LoginRequired:
            return Redirect("/login")
        return Redirect("/keys")

    @get("/favicon.ico", include_in_schema=False)
    async def favicon(self) -> Redirect:
        """What browsers ask for before they read a page's icon link."""
        return Redirect("/static/favicon.svg", status_code=HTTP_301_MOVED_PERMANENTLY)

    @get("/login", include_in_schema=False)
    async def login_form(self, request: Request, account_service: NamedDependency[AccountService]) -> Template:
        return page("auth.html", request, mode="login", error=None, email="", signup=account_service.signup_mode)

    @get("/signup", include_in_schema=False)
    async def signup_form(self, request: Request, account_service: NamedDependency[AccountService]) -> Template:
        """The form, with an invite code field when MESH_SIGNUP=invite; no form when it is closed."""
        return page("auth.html", request, mode="signup", error=None, email="", signup=account_service.signup_mode)

    @post("/login", include_in_schema=False, cache_control=NO_STORE)
    async def login(self, request: Request, account_service: NamedDependency[AccountService]) -> Response:
        return await self._enter(request, account_service, "login")

    @post("/signup", include_in_schema=False, cache_control=NO_STORE)
    async def signup(self, request: Request, account_service: NamedDependency[AccountService]) -> Response:
        return await self._enter(request, account_service, "signup")

    @post("/logout", include_in_schema=False)
    async def logout(self, request: Request, account_service: NamedDependency[AccountService]) -> Redirect:
        """The session's management token is revoked, and the browser forgets the cookie."""
        token = request.cookies.get(SESSION_COOKIE)
        account_id = await account_service.account_for(token) if token else None
        if account_id is not None:
            await account_service.log_out(account_id, hash_token(token))
        return Redirect("/login", cookies=[expired_cookie(request)])

    @staticmethod
    async def _enter(request: Request, account_service: AccountService, mode: str) -> Response:
        form = await request.form()
        email, password = form.get("email", ""), form.get("password", "")
        try:
            if mode == "signup":
                invite_code = form.get("invite_code") or None
                session = await account_service.sign_up(email, password, client_address(request), invite_code)
            else:
                session = await account_service.log_in(email, password, client_address(request))
        except PAGE_ERRORS as exc:
            signup = account_service.signup_mode
            return page("auth.html", request, mode=mode, error=failure(exc), email=email, signup=signup)
        return Redirect(
            "/keys", cookies=[session_cookie(request, session.management_token, session_seconds(account_service))]
        )
