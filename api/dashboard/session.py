"""Who is looking at the dashboard: a session cookie that holds the account's management token.

The cookie is HttpOnly (page scripts never see it), SameSite=Lax (other sites' forms do not carry it) and
Secure when the page came over https. Every form also carries a CSRF token (Litestar's double-submit
cookie, signed), checked before any handler runs.
"""

from __future__ import annotations

from uuid import UUID

from litestar import Request
from litestar.datastructures import Cookie
from litestar.di import NamedDependency

from api.services.accounts import AccountService
from api.services.operators import OperatorService

SESSION_COOKIE = "mesh_session"
CSRF_COOKIE = "mesh_csrf"


class LoginRequired(Exception):
    """No valid session: the visitor goes to /login."""


def session_seconds(account_service: AccountService) -> int:
    """How long a session lives unused (MESH_SESSION_DAYS)."""
    return int(account_service.session.total_seconds())


def session_cookie(request: Request, management_token: str, seconds: int) -> Cookie:
    """Kept as long as the token lives unused (MESH_SESSION_DAYS). The server renews a token in use, and every
    page sent re-sends the cookie with a fresh max-age (see `page_account`), so the browser never drops the
    cookie of a session still alive."""
    return Cookie(
        key=SESSION_COOKIE,
        value=management_token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        max_age=seconds,
        path="/",
    )


def expired_cookie(request: Request) -> Cookie:
    return session_cookie(request, "", 0)


async def page_account(
    request: Request,
    account_service: NamedDependency[AccountService],
    operator_service: NamedDependency[OperatorService | None] = None,
) -> UUID:
    """The account of the session, or LoginRequired. With `operator_service`, the page learns whether the account is
    an operator's (its navigation then leads to the operator section)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    account_id = await account_service.account_for(token)
    if account_id is None:
        raise LoginRequired()
    if operator_service is not None:
        request.state.operator = await operator_service.is_operator(account_id)
    request.state.session_token = token  # the page sent renews the cookie...
    request.state.session_seconds = session_seconds(account_service)  # ...for this long
    return account_id


def renewed_cookie(request: Request) -> list[Cookie]:
    """The session cookie again with a full max-age, for a page shown in a live session (else nothing)."""
    token = getattr(request.state, "session_token", None)
    return [session_cookie(request, token, request.state.session_seconds)] if token else []
