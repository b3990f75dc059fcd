"""Who is calling the JSON API: an account (management token) or the operator."""

from __future__ import annotations

import hmac
from datetime import datetime, timezone
from uuid import UUID

from litestar import Request

from api.errors import ApiError
from api.runtime import Runtime
from domain.credentials import API_KEY_PREFIX, hash_token, session_renewal_due
from projections import directory


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing credentials: send 'Authorization: Bearer <management token>'", "unauthorized")
    return token.strip()


def presented_token_hash(request: Request) -> str:
    """The hash of the management token the request carries (what log-out revokes)."""
    return hash_token(_bearer(request))


async def current_account(request: Request) -> UUID:
    token = _bearer(request)
    if token.startswith(API_KEY_PREFIX):
        raise ApiError(403, "API keys only reach /v1/*; use the account's management token for /api/*", "forbidden")
    runtime: Runtime = request.app.state.runtime
    token_hash = hash_token(token)
    async with runtime.pool.connection() as conn:
        session = await directory.session_for_token(conn, token_hash)
    if session is None:
        raise ApiError(401, "invalid or expired management token; log in again", "unauthorized")
    account_id, expires_at = session
    if session_renewal_due(expires_at, datetime.now(timezone.utc), runtime.session):
        runtime.renew_session(account_id, token_hash)
    return account_id


async def operator(request: Request) -> None:
    runtime: Runtime = request.app.state.runtime
    if not hmac.compare_digest(_bearer(request).encode(), runtime.operator_token.encode()):
        raise ApiError(403, "this route needs the operator token", "forbidden")
