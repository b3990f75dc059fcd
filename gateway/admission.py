"""Who is calling and whether they may: the gateway's view of keys and balances.

The gateway reads, never writes: the composition root supplies a `KeyDirectory`
backed by the read models.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

import msgspec

from gateway.errors import GatewayError


class KeyInfo(msgspec.Struct, frozen=True):
    key_id: UUID
    account_id: UUID
    default_model: str | None
    status: str
    spend_cap: int | None


class KeyDirectory(Protocol):
    async def key(self, key_hash: str) -> KeyInfo | None:
        """The key with this hash, or None."""

    async def available(self, account_id: UUID) -> int:
        """Credits minus spend, pico-USD."""


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            break
    raise GatewayError(401, "missing API key: send 'Authorization: Bearer mk-...'", "invalid_request_error",
                       "missing_api_key")
