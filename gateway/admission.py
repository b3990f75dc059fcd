"""Who is calling and whether they may: the gateway's view of keys and balances.

The gateway reads, never writes: the composition root supplies a `KeyDirectory`
backed by the read models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from domain.apikey import unusable
from gateway.errors import GatewayError


class KeyInfo(msgspec.Struct, frozen=True):
    key_id: UUID
    account_id: UUID
    default_model: str | None
    status: str  # active | disabled | revoked
    spend_cap: int | None
    allowed_models: frozenset[str] | None = None
    expires_at: datetime | None = None
    secret_valid_until: datetime | None = None  # a rotated-out secret works until then
    fit_to_budget: bool = False  # a request the budget does not cover gets a smaller limit instead of a 402
    rpm_limit: int | None = None  # requests a UTC minute (gateway/key_rate.py); None: no limit
    tpm_limit: int | None = None  # tokens a UTC minute
    account_suspended: bool = False  # an operator suspended the key's account (account.suspended)

    def refusal(self, now: datetime) -> GatewayError | None:
        """Why this key may not be used now, as the error to answer with; None if it may."""
        if self.account_suspended:
            return GatewayError(
                402,
                "this API key's account is suspended by the operator of this Mesh; contact them",
                "insufficient_quota",
                "account_suspended",
            )
        code = unusable(self.status == "revoked", self.status == "disabled", self.expires_at, now)
        if code == "key_revoked":
            return GatewayError(402, "this API key has been revoked", "insufficient_quota", code)
        if code == "key_disabled":
            return GatewayError(
                402,
                "this API key is disabled; enable it in the dashboard or with POST /api/keys/{id}/enable",
                "insufficient_quota",
                code,
            )
        if code == "key_expired" and self.expires_at is not None:
            return GatewayError(
                402, f"this API key expired at {self.expires_at.isoformat()}", "insufficient_quota", code
            )
        if self.secret_valid_until is not None and now >= self.secret_valid_until:
            return GatewayError(
                401, "this API key was rotated; use the new secret", "invalid_request_error", "invalid_api_key"
            )
        return None

    def may_use(self, model_id: str) -> bool:
        return self.allowed_models is None or model_id in self.allowed_models


class KeyLoader(Protocol):
    async def __call__(self, key_hash: str) -> KeyInfo | None:
        """The key a secret hash belongs to, from the read model, or None."""


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise GatewayError(
        401, "missing API key: send 'Authorization: Bearer mk-...'", "invalid_request_error", "missing_api_key"
    )
