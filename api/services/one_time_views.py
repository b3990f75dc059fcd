"""What a dashboard page shows once, after a redirect: a new key's secret, a rotated key's new secret, the
answer of a template's Test sent without JavaScript.

Post/redirect/get: an action's POST stores what its answer would have shown and redirects to a GET that takes
it. Taking deletes it, so a reload shows it no more (and repeats nothing), and it lives at most
`VIEW_SECONDS`. It is kept in PostgreSQL, so whichever gateway process behind the proxy serves the GET finds
it, and sealed with the session's token, which the server keeps only as a hash: the row alone reveals nothing,
and another session cannot open it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

VIEW_SECONDS = 600  # a view not taken within this is gone (the redirect follows at once)
VIEWS_PER_ACCOUNT = 16  # views kept per account at the most: older ones go first
MAX_PAYLOAD_BYTES = 1024 * 1024  # what one view may hold
_ID_BYTES = 16
_TAG_BYTES = 16
_BLOCK = hashlib.sha256().digest_size

TABLE = "dashboard_one_time_views"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id text PRIMARY KEY,
    account_id uuid NOT NULL,
    sealed bytea NOT NULL,
    expires_at timestamptz NOT NULL
)"""


def _keys(session_token: str, view_id: str) -> tuple[bytes, bytes]:
    """The keystream key and the tag key of one view: HMAC-SHA256 of the session token, bound to the view."""
    base = hmac.new(session_token.encode(), b"mesh one-time view " + view_id.encode(), hashlib.sha256).digest()
    return (
        hmac.new(base, b"stream", hashlib.sha256).digest(),
        hmac.new(base, b"tag", hashlib.sha256).digest(),
    )


def _stream(key: bytes, length: int) -> bytes:
    blocks = (length + _BLOCK - 1) // _BLOCK
    return b"".join(hmac.new(key, i.to_bytes(8, "big"), hashlib.sha256).digest() for i in range(blocks))[:length]


def seal(session_token: str, view_id: str, plain: bytes) -> bytes:
    """HMAC-SHA256 in counter mode, then a tag over the ciphertext (encrypt-then-MAC)."""
    stream_key, tag_key = _keys(session_token, view_id)
    body = bytes(a ^ b for a, b in zip(plain, _stream(stream_key, len(plain))))
    return hmac.new(tag_key, body, hashlib.sha256).digest()[:_TAG_BYTES] + body


def unseal(session_token: str, view_id: str, sealed: bytes) -> bytes | None:
    """The plain bytes, or None when the tag does not match (another session, or a changed row)."""
    stream_key, tag_key = _keys(session_token, view_id)
    tag, body = sealed[:_TAG_BYTES], sealed[_TAG_BYTES:]
    if not hmac.compare_digest(tag, hmac.new(tag_key, body, hashlib.sha256).digest()[:_TAG_BYTES]):
        return None
    return bytes(a ^ b for a, b in zip(body, _stream(stream_key, len(body))))


class TooLarge(ValueError):
    """More than one view may hold."""


class OneTimeViews:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool
        self._table_ready = False

    async def put(self, account_id: UUID, session_token: str, content: dict[str, Any]) -> str:
        """Keep `content` for one view by this session; the id to redirect with."""
        plain = msgspec.json.encode(content)
        if len(plain) > MAX_PAYLOAD_BYTES:
            raise TooLarge(f"a one-time view holds at most {MAX_PAYLOAD_BYTES} bytes, got {len(plain)}")
        view_id = secrets.token_urlsafe(_ID_BYTES)
        await self._ensure_table()
        async with self.pool.connection() as conn:
            await conn.execute(f"DELETE FROM {TABLE} WHERE expires_at < now()")
            await conn.execute(
                f"INSERT INTO {TABLE} (id, account_id, sealed, expires_at) VALUES (%s, %s, %s, now() + %s)",
                (view_id, account_id, seal(session_token, view_id, plain), timedelta(seconds=VIEW_SECONDS)),
            )
            await conn.execute(
                f"""DELETE FROM {TABLE} WHERE account_id = %s AND id NOT IN (
                    SELECT id FROM {TABLE} WHERE account_id = %s ORDER BY expires_at DESC LIMIT %s)""",
                (account_id, account_id, VIEWS_PER_ACCOUNT),
            )
        return view_id

    async def take(self, account_id: UUID, session_token: str, view_id: str) -> dict[str, Any] | None:
        """What `put` kept under `view_id` for this account and session, once; None after that, after
        `VIEW_SECONDS`, or for another session."""
        if len(view_id) > 4 * _ID_BYTES:  # not an id `put` made
            return None
        await self._ensure_table()
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                f"DELETE FROM {TABLE} WHERE id = %s AND account_id = %s AND expires_at >= now() RETURNING sealed",
                (view_id, account_id),
            )
            row = await cur.fetchone()
        plain = unseal(session_token, view_id, bytes(row[0])) if row is not None else None
        return msgspec.json.decode(plain) if plain is not None else None

    async def _ensure_table(self) -> None:
        """The table is the dashboard's, not a read model's: made on first use by whichever process gets there."""
        if self._table_ready:
            return
        async with self.pool.connection() as conn:
            try:
                async with conn.transaction():
                    await conn.execute(_SCHEMA)
            except psycopg.errors.UniqueViolation:  # another process created it at the same moment
                pass
        self._table_ready = True
