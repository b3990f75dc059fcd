"""Directory read model: accounts, their management tokens, and API keys.

Authentication reads it: a management token or an API key is looked up by hash.
"""

from __future__ import annotations

from uuid import UUID

import msgspec
import psycopg

from projections.readmodel import Envelope


class KeyRow(msgspec.Struct, frozen=True):
    key_id: UUID
    account_id: UUID
    label: str
    prefix: str
    spend_cap: int | None
    default_model: str | None
    status: str
    created_at: object


class Directory:
    name = "directory"
    tables = ("accounts", "management_tokens", "api_keys")
    topics = frozenset({"account.registered", "account.token_issued", "key.created"})

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t['accounts']} (
                account_id uuid primary key,
                email text not null unique,
                created_at timestamptz not null
            );
            create table if not exists {t['management_tokens']} (
                token_hash text primary key,
                account_id uuid not null,
                issued_at timestamptz not null
            );
            create table if not exists {t['api_keys']} (
                key_id uuid primary key,
                account_id uuid not null,
                label text not null,
                key_hash text not null unique,
                prefix text not null,
                spend_cap numeric,
                default_model text,
                status text not null default 'active',
                created_at timestamptz not null
            );
            create index if not exists {t['api_keys']}_account on {t['api_keys']} (account_id, created_at);
        """)

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        for item in batch:
            e = item.event
            if item.topic == "account.registered":
                await cur.execute(
                    f"insert into {t['accounts']} (account_id, email, created_at) values (%s, %s, %s)",
                    (e.originator_id, e.email, e.timestamp),
                )
                await cur.execute(
                    f"insert into {t['management_tokens']} (token_hash, account_id, issued_at) values (%s, %s, %s)",
                    (e.token_hash, e.originator_id, e.timestamp),
                )
            elif item.topic == "account.token_issued":
                await cur.execute(
                    f"insert into {t['management_tokens']} (token_hash, account_id, issued_at) values (%s, %s, %s)",
                    (e.token_hash, e.originator_id, e.timestamp),
                )
            elif item.topic == "key.created":
                await cur.execute(
                    f"""insert into {t['api_keys']}
                        (key_id, account_id, label, key_hash, prefix, spend_cap, default_model, created_at)
                        values (%s, %s, %s, %s, %s, %s, %s, %s)""",
                    (e.originator_id, e.account_id, e.label, e.key_hash, e.prefix, e.spend_cap,
                     e.default_model, e.timestamp),
                )


# Queries (they read the views, i.e. the generation in service).

async def account_for_token(conn: psycopg.AsyncConnection, token_hash: str) -> UUID | None:
    cur = await conn.execute("select account_id from management_tokens where token_hash = %s", (token_hash,))
    row = await cur.fetchone()
    return row[0] if row else None


async def account_exists(conn: psycopg.AsyncConnection, account_id: UUID) -> bool:
    cur = await conn.execute("select 1 from accounts where account_id = %s", (account_id,))
    return await cur.fetchone() is not None


_KEY_COLUMNS = "key_id, account_id, label, prefix, spend_cap, default_model, status, created_at"


def _key_row(row: tuple) -> KeyRow:
    values = list(row)
    values[4] = int(values[4]) if values[4] is not None else None
    return KeyRow(*values)


async def keys_of(conn: psycopg.AsyncConnection, account_id: UUID) -> list[KeyRow]:
    cur = await conn.execute(
        f"select {_KEY_COLUMNS} from api_keys where account_id = %s order by created_at", (account_id,)
    )
    return [_key_row(r) for r in await cur.fetchall()]


async def key_of(conn: psycopg.AsyncConnection, account_id: UUID, key_id: UUID) -> KeyRow | None:
    cur = await conn.execute(
        f"select {_KEY_COLUMNS} from api_keys where account_id = %s and key_id = %s", (account_id, key_id)
    )
    row = await cur.fetchone()
    return _key_row(row) if row else None


async def key_by_hash(conn: psycopg.AsyncConnection, key_hash: str) -> KeyRow | None:
    cur = await conn.execute(f"select {_KEY_COLUMNS} from api_keys where key_hash = %s", (key_hash,))
    row = await cur.fetchone()
    return _key_row(row) if row else None
