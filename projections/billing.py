"""Billing read model: per-account credits and spend, per-key spend, and every metered request.

A usage event is counted once: its trace id is the primary key of `usage`, and
only rows actually inserted move a balance. So a usage event published twice
(a retried publish, a replayed spool) never charges twice.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from uuid import UUID

import msgspec
import psycopg

from projections.readmodel import Envelope


class Balance(msgspec.Struct, frozen=True):
    credits: int  # pico-USD
    spend: int

    @property
    def available(self) -> int:
        return self.credits - self.spend


class Billing:
    name = "billing"
    tables = ("balances", "key_spend", "usage", "credit_grants")
    topics = frozenset({"account.registered", "account.credits_granted", "usage.recorded"})

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t['balances']} (
                account_id uuid primary key,
                credits numeric(40, 0) not null default 0,
                spend numeric(40, 0) not null default 0
            );
            create table if not exists {t['key_spend']} (
                key_id uuid primary key,
                account_id uuid not null,
                requests bigint not null default 0,
                errors bigint not null default 0,
                prompt_tokens bigint not null default 0,
                completion_tokens bigint not null default 0,
                spend numeric(40, 0) not null default 0
            );
            create table if not exists {t['credit_grants']} (
                position bigint primary key,
                account_id uuid not null,
                amount numeric(40, 0) not null,
                reason text not null,
                granted_by text not null,
                time timestamptz not null
            );
            create table if not exists {t['usage']} (
                trace_id uuid primary key,
                position bigint not null,
                account_id uuid not null,
                key_id uuid not null,
                model text not null,
                requested_model text,
                provider text not null,
                prompt_tokens bigint not null,
                completion_tokens bigint not null,
                prompt_per_1k numeric(40, 0) not null,
                completion_per_1k numeric(40, 0) not null,
                cost numeric(40, 0) not null,
                status text not null,
                http_status int not null,
                time timestamptz not null,
                latency_us bigint not null,
                upstream_us bigint not null,
                first_token_us bigint,
                stream boolean not null,
                estimated boolean not null,
                request_id text,
                error text
            );
            create index if not exists {t['usage']}_account_time on {t['usage']} (account_id, time);
        """)

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        credits: dict[UUID, int] = defaultdict(int)
        usage_rows = []
        for item in batch:
            e = item.event
            if item.topic == "account.registered":
                credits[e.originator_id] += 0
            elif item.topic == "account.credits_granted":
                credits[e.originator_id] += e.amount
                await cur.execute(
                    f"insert into {t['credit_grants']} (position, account_id, amount, reason, granted_by, time)"
                    " values (%s, %s, %s, %s, %s, %s)",
                    (item.position, e.originator_id, e.amount, e.reason, e.granted_by, e.timestamp),
                )
            elif item.topic == "usage.recorded":
                usage_rows.append((
                    e.trace_id, item.position, e.account_id, e.key_id, e.model, e.requested_model, e.provider,
                    e.prompt_tokens, e.completion_tokens, e.prompt_per_1k, e.completion_per_1k, e.cost,
                    e.status, e.http_status, e.timestamp, e.latency_us, e.upstream_us, e.first_token_us,
                    e.stream, e.estimated, e.request_id, e.error,
                ))
        if credits:
            await cur.executemany(
                f"""insert into {t['balances']} (account_id, credits) values (%s, %s)
                    on conflict (account_id) do update set credits = {t['balances']}.credits + excluded.credits""",
                list(credits.items()),
            )
        if usage_rows:
            await self._apply_usage(cur, t, usage_rows)

    async def _apply_usage(self, cur: psycopg.AsyncCursor, t: dict[str, str], rows: list[tuple]) -> None:
        await cur.executemany(
            f"""insert into {t['usage']} values ({', '.join(['%s'] * 22)})
                on conflict (trace_id) do nothing returning account_id, key_id, prompt_tokens,
                completion_tokens, cost, status""",
            rows,
            returning=True,
        )
        spend: dict[UUID, int] = defaultdict(int)
        keys: dict[UUID, list] = {}
        while True:
            inserted = await cur.fetchone()
            if inserted is not None:
                account_id, key_id, prompt, completion, cost, status = inserted
                spend[account_id] += int(cost)
                k = keys.setdefault(key_id, [account_id, 0, 0, 0, 0, 0])
                k[1] += 1
                k[2] += status != "ok"
                k[3] += prompt
                k[4] += completion
                k[5] += int(cost)
            if not cur.nextset():
                break
        if spend:
            await cur.executemany(
                f"""insert into {t['balances']} (account_id, spend) values (%s, %s)
                    on conflict (account_id) do update set spend = {t['balances']}.spend + excluded.spend""",
                list(spend.items()),
            )
        if keys:
            await cur.executemany(
                f"""insert into {t['key_spend']} as k
                    (key_id, account_id, requests, errors, prompt_tokens, completion_tokens, spend)
                    values (%s, %s, %s, %s, %s, %s, %s)
                    on conflict (key_id) do update set requests = k.requests + excluded.requests,
                    errors = k.errors + excluded.errors, prompt_tokens = k.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = k.completion_tokens + excluded.completion_tokens,
                    spend = k.spend + excluded.spend""",
                [(key_id, *values) for key_id, values in keys.items()],
            )


async def balance_of(conn: psycopg.AsyncConnection, account_id: UUID) -> Balance:
    cur = await conn.execute("select credits, spend from balances where account_id = %s", (account_id,))
    row = await cur.fetchone()
    return Balance(int(row[0]), int(row[1])) if row else Balance(0, 0)


async def usage_count(conn: psycopg.AsyncConnection, account_id: UUID, since: datetime | None = None) -> int:
    cur = await conn.execute("select count(*) from usage where account_id = %s", (account_id,))
    row = await cur.fetchone()
    return int(row[0])
