"""Who is calling the JSON API: an account (management token) or an operator (the operator token, or an
operator's management token)."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, Request
from litestar.di import NamedDependency, Provide

from api.errors import ApiError
from api.openapi import OPERATOR
from api.services.accounts import AccountService
from api.services.operators import OperatorService
from domain.credentials import API_KEY_PREFIX, hash_token


def bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing credentials: send 'Authorization: Bearer <management token>'", "unauthorized")
    return token.strip()


def presented_token_hash(request: Request) -> str:
    """The hash of the management token the request carries (what log-out revokes)."""
    return hash_token(bearer(request))


async def current_account(request: Request, account_service: NamedDependency[AccountService]) -> UUID:
    token = bearer(request)
    if token.startswith(API_KEY_PREFIX):
        raise ApiError(403, "API keys only reach /v1/*; use the account's management token for /api/*", "forbidden")
    account_id = await account_service.account_for(token)
    if account_id is None:
        raise ApiError(401, "invalid or expired management token; log in again", "unauthorized")
    return account_id


async def operator(request: Request, operator_service: NamedDependency[OperatorService]) -> str:
    """The acting operator: "token" for the shared operator token, the account id for the management token of an
    operator's account; else a 403."""
    return await operator_service.acting(bearer(request))


class OperatorController(Controller):
    """Routes under /admin that operators alone may call; each handler is told who acts (`acting`)."""

    path = "/admin"
    security = OPERATOR
    dependencies = {"acting": Provide(operator)}
