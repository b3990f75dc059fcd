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

from domain.events import EVENT_TYPES
from projections.readmodel import Envelope


class Balance(msgspec.Struct, frozen=True):
    credits: int  # pico-USD
    spend: int

    @property
    def available(self) -> int:
        return self.credits - self.spend


class Billing:
    name = "billing"
    tables = ("balances", "key_spend", "usage", "credit_grants", "leases", "topups", "auto_refills")
    topics = frozenset({"account.registered", "account.credits_granted", "account.credits_debited",
                        "usage.recorded", "account.budget_leased", "account.lease_settled", "account.lease_extended"}
                       | {name for name in EVENT_TYPES if name.startswith(("topup.", "account.auto_refill_"))}
                       | {"account.stripe_customer_linked"})

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
                error text,
                lease_id uuid
            );
            create index if not exists {t['usage']}_account_time on {t['usage']} (account_id, time);
            create table if not exists {t['leases']} (
                lease_id uuid primary key,
                account_id uuid not null,
                key_id uuid not null,
                amount numeric(40, 0) not null,
                spent numeric(40, 0) not null default 0,  -- from usage events paid by this lease
                expires_at timestamptz not null,
                settled boolean not null default false
            );
            create index if not exists {t['leases']}_open on {t['leases']} (expires_at) where not settled;
            create table if not exists {t['topups']} (
                topup_id uuid primary key,
                account_id uuid not null,
                provider text not null,
                reference text not null,
                amount numeric(40, 0) not null,
                status text not null,
                received numeric(40, 0) not null default 0,
                refunded numeric(40, 0) not null default 0,
                disputed numeric(40, 0) not null default 0,
                failures int not null default 0,
                last_failure text,
                expires_at timestamptz,
                created_at timestamptz not null,
                updated_at timestamptz not null
            );
            create index if not exists {t['topups']}_account on {t['topups']} (account_id, created_at);
            create table if not exists {t['auto_refills']} (
                account_id uuid primary key,
                customer text,
                threshold numeric(40, 0),
                amount numeric(40, 0),
                payment_method text,
                max_failures int,
                enabled boolean not null default false,
                armed boolean not null default true,
                pending uuid,
                failures int not null default 0,
                last_failure text,
                disabled_reason text,
                updated_at timestamptz not null
            );
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
            elif item.topic == "account.credits_debited":
                credits[e.originator_id] -= e.amount
                await cur.execute(
                    f"insert into {t['credit_grants']} (position, account_id, amount, reason, granted_by, time)"
                    " values (%s, %s, %s, %s, %s, %s)",
                    (item.position, e.originator_id, -e.amount, e.reason, e.debited_by, e.timestamp),
                )
            elif item.topic.startswith("topup."):
                await self._apply_topup(cur, t, item)
            elif item.topic.startswith("account.auto_refill_") or item.topic == "account.stripe_customer_linked":
                await self._apply_auto_refill(cur, t, item)
            elif item.topic == "account.budget_leased":
                await cur.execute(
                    f"insert into {t['leases']} (lease_id, account_id, key_id, amount, expires_at)"
                    " values (%s, %s, %s, %s, %s) on conflict do nothing",
                    (e.lease_id, e.originator_id, e.key_id, e.amount, e.expires_at),
                )
            elif item.topic == "account.lease_settled":
                await cur.execute(f"update {t['leases']} set settled = true where lease_id = %s", (e.lease_id,))
            elif item.topic == "account.lease_extended":
                await cur.execute(f"update {t['leases']} set expires_at = %s where lease_id = %s",
                                  (e.expires_at, e.lease_id))
            elif item.topic == "usage.recorded":
                usage_rows.append({"position": item.position, **msgspec.structs.asdict(e)})
        if credits:
            await cur.executemany(
                f"""insert into {t['balances']} (account_id, credits) values (%s, %s)
                    on conflict (account_id) do update set credits = {t['balances']}.credits + excluded.credits""",
                list(credits.items()),
            )
        if usage_rows:
            await self._apply_usage(cur, t, usage_rows)

    async def _apply_topup(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        if item.topic == "topup.requested":
            await cur.execute(
                f"""insert into {t['topups']} (topup_id, account_id, provider, reference, amount, status,
                    expires_at, created_at, updated_at) values (%s, %s, %s, %s, %s, 'pending', %s, %s, %s)""",
                (e.originator_id, e.account_id, e.provider, e.reference, e.amount, e.expires_at, e.timestamp,
                 e.timestamp),
            )
            return
        change = {
            "topup.succeeded": ("status = 'succeeded', received = %s", lambda: (e.amount,)),
            "topup.failed": ("failures = failures + 1, last_failure = %s", lambda: (e.reason,)),
            "topup.expired": ("status = 'expired'", lambda: ()),
            "topup.refunded": ("refunded = %s", lambda: (e.total_refunded,)),
            "topup.disputed": ("disputed = disputed + %s", lambda: (e.amount,)),
        }[item.topic]
        await cur.execute(f"update {t['topups']} set {change[0]}, updated_at = %s where topup_id = %s",
                          (*change[1](), e.timestamp, e.originator_id))

    async def _apply_auto_refill(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        columns = {
            "account.stripe_customer_linked": lambda: {"customer": e.customer_id},
            "account.auto_refill_configured": lambda: {
                "threshold": e.threshold, "amount": e.amount, "payment_method": e.payment_method,
                "max_failures": e.max_failures, "enabled": True, "armed": True, "pending": None, "failures": 0,
                "disabled_reason": None},
            "account.auto_refill_disabled": lambda: {"enabled": False, "pending": None, "disabled_reason": e.reason},
            "account.auto_refill_triggered": lambda: {"pending": e.refill_id, "armed": False},
            "account.auto_refill_succeeded": lambda: {"pending": None, "failures": 0},
            "account.auto_refill_failed": lambda: {"pending": None, "armed": True, "last_failure": e.reason},
            "account.auto_refill_armed": lambda: {"armed": True},
        }[item.topic]()
        if item.topic == "account.auto_refill_failed":
            increment = ", failures = a.failures + 1"
        else:
            increment = ""
        names = list(columns)
        await cur.execute(
            f"""insert into {t['auto_refills']} as a (account_id, {', '.join(names)}, updated_at)
                values (%s, {', '.join(['%s'] * len(names))}, %s)
                on conflict (account_id) do update set
                {', '.join(f'{n} = excluded.{n}' for n in names)}{increment}, updated_at = excluded.updated_at""",
            (e.originator_id, *columns.values(), e.timestamp),
        )

    async def _apply_usage(self, cur: psycopg.AsyncCursor, t: dict[str, str], rows: list[dict]) -> None:
        """The whole batch in one statement: insert the requests not seen before (by trace id), and add only
        what was inserted to the balances, leases and per-key totals. The rows travel as one JSON array
        (encoded by msgspec): binding 23 columns per row costs the worker several times more."""
        await cur.execute(
            f"""with new as (
                    insert into {t['usage']} ({_USAGE_COLUMNS})
                    select {_USAGE_FIELDS} from json_to_recordset(%s::json) as r({_USAGE_RECORD})
                    on conflict (trace_id) do nothing
                    returning account_id, key_id, prompt_tokens, completion_tokens, cost, status, lease_id
                ), accounts as (
                    insert into {t['balances']} as b (account_id, spend)
                    select account_id, sum(cost) from new group by account_id
                    on conflict (account_id) do update set spend = b.spend + excluded.spend
                ), lease_spend as (
                    update {t['leases']} l set spent = l.spent + s.amount
                    from (select lease_id, sum(cost) as amount from new where lease_id is not null group by lease_id) s
                    where l.lease_id = s.lease_id
                )
                insert into {t['key_spend']} as k
                    (key_id, account_id, requests, errors, prompt_tokens, completion_tokens, spend)
                select key_id, account_id, count(*), count(*) filter (where status <> 'ok'), sum(prompt_tokens),
                    sum(completion_tokens), sum(cost) from new group by key_id, account_id
                on conflict (key_id) do update set requests = k.requests + excluded.requests,
                    errors = k.errors + excluded.errors, prompt_tokens = k.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = k.completion_tokens + excluded.completion_tokens,
                    spend = k.spend + excluded.spend""",
            (msgspec.json.encode(rows).decode(),),
        )


# How json_to_recordset reads a usage row: the event's fields (plus position) and their column types;
# the event's `timestamp` goes to the column `time`.
_USAGE_TYPES = {
    "trace_id": "uuid", "position": "bigint", "account_id": "uuid", "key_id": "uuid", "model": "text",
    "requested_model": "text", "provider": "text", "prompt_tokens": "bigint", "completion_tokens": "bigint",
    "prompt_per_1k": "numeric", "completion_per_1k": "numeric", "cost": "numeric", "status": "text",
    "http_status": "int", "timestamp": "timestamptz", "latency_us": "bigint", "upstream_us": "bigint",
    "first_token_us": "bigint", "stream": "boolean", "estimated": "boolean", "request_id": "text", "error": "text",
    "lease_id": "uuid",
}
_USAGE_COLUMNS = ", ".join("time" if name == "timestamp" else name for name in _USAGE_TYPES)
_USAGE_FIELDS = ", ".join(f'r."{name}"' for name in _USAGE_TYPES)
_USAGE_RECORD = ", ".join(f'"{name}" {kind}' for name, kind in _USAGE_TYPES.items())


async def balance_of(conn: psycopg.AsyncConnection, account_id: UUID) -> Balance:
    cur = await conn.execute("select credits, spend from balances where account_id = %s", (account_id,))
    row = await cur.fetchone()
    return Balance(int(row[0]), int(row[1])) if row else Balance(0, 0)


async def expired_leases(conn: psycopg.AsyncConnection, grace_seconds: float) -> list[tuple[UUID, UUID, UUID, int]]:
    """Open leases past their expiry (their holder is gone): (lease, account, key, spent by its usage)."""
    cur = await conn.execute(
        "select lease_id, account_id, key_id, spent from leases where not settled"
        " and expires_at < now() - make_interval(secs => %s) order by expires_at limit 100",
        (grace_seconds,),
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in await cur.fetchall()]


class KeyStats(msgspec.Struct, frozen=True):
    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend: int = 0  # pico-USD


async def key_stats(conn: psycopg.AsyncConnection, account_id: UUID, start: datetime | None = None,
                    end: datetime | None = None) -> dict[UUID, KeyStats]:
    """Per-key totals for the account: all time, or over [start, end) when either is given."""
    if start is None and end is None:
        cur = await conn.execute(
            "select key_id, requests, errors, prompt_tokens, completion_tokens, spend from key_spend"
            " where account_id = %s", (account_id,))
    else:
        cur = await conn.execute(
            """select key_id, count(*), count(*) filter (where status <> 'ok'), coalesce(sum(prompt_tokens), 0),
                      coalesce(sum(completion_tokens), 0), coalesce(sum(cost), 0)
               from usage where account_id = %s and time >= coalesce(%s, '-infinity'::timestamptz)
               and time < coalesce(%s, 'infinity'::timestamptz) group by key_id""",
            (account_id, start, end))
    return {r[0]: KeyStats(int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in await cur.fetchall()}


async def balance_at(conn: psycopg.AsyncConnection, account_id: UUID, at: datetime) -> Balance:
    """Credits and spend as they stood at `at`, from the full history of grants and metered requests."""
    cur = await conn.execute(
        """select (select coalesce(sum(amount), 0) from credit_grants where account_id = %s and time <= %s),
                  (select coalesce(sum(cost), 0) from usage where account_id = %s and time <= %s)""",
        (account_id, at, account_id, at),
    )
    credits, spend = await cur.fetchone()
    return Balance(int(credits), int(spend))


SPEND_GROUPS = {
    "provider": "provider",
    "model": "model",
    "key": "key_id",
    "day": "date_trunc('day', time at time zone 'UTC')",
    "hour": "date_trunc('hour', time at time zone 'UTC')",
}


class SpendRow(msgspec.Struct):
    group: dict[str, str]
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend: int  # pico-USD


async def spend_history(conn: psycopg.AsyncConnection, account_id: UUID, group_by: list[str],
                        start: datetime | None, end: datetime | None) -> list[SpendRow]:
    """Spend over [start, end) grouped by any of provider, model, key, day, hour (UTC)."""
    columns = [SPEND_GROUPS[g] for g in group_by]
    select = "".join(f"{c} as g{i}, " for i, c in enumerate(columns))
    group = f"group by {', '.join(f'g{i}' for i in range(len(columns)))} order by 1" if columns else ""
    cur = await conn.execute(
        f"""select {select} count(*), count(*) filter (where status <> 'ok'), coalesce(sum(prompt_tokens), 0),
                   coalesce(sum(completion_tokens), 0), coalesce(sum(cost), 0)
            from usage where account_id = %s and time >= coalesce(%s, '-infinity'::timestamptz)
            and time < coalesce(%s, 'infinity'::timestamptz) {group}""",
        (account_id, start, end),
    )
    rows = []
    for r in await cur.fetchall():
        keys = r[:len(columns)]
        values = r[len(columns):]
        group_values = {g: (v.isoformat() + "Z" if isinstance(v, datetime) else str(v)) for g, v in zip(group_by, keys)}
        rows.append(SpendRow(group_values, int(values[0]), int(values[1]), int(values[2]), int(values[3]),
                             int(values[4])))
    return [row for row in rows if row.requests]


class TopUpRow(msgspec.Struct):
    id: UUID
    provider: str
    reference: str
    amount: int
    status: str
    received: int
    refunded: int
    disputed: int
    failures: int
    last_failure: str | None
    expires_at: datetime | None
    created_at: datetime


async def topups_of(conn: psycopg.AsyncConnection, account_id: UUID) -> list[TopUpRow]:
    cur = await conn.execute(
        """select topup_id, provider, reference, amount, status, received, refunded, disputed, failures,
                  last_failure, expires_at, created_at from topups where account_id = %s order by created_at desc""",
        (account_id,))
    return [TopUpRow(r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]), r[8], r[9], r[10], r[11])
            for r in await cur.fetchall()]


async def due_to_expire(conn: psycopg.AsyncConnection) -> list[tuple[str, str]]:
    cur = await conn.execute(
        "select provider, reference from topups where status = 'pending' and expires_at < now() limit 100")
    return [(r[0], r[1]) for r in await cur.fetchall()]


class AutoRefillRow(msgspec.Struct):
    account_id: UUID
    customer: str | None
    threshold: int | None
    amount: int | None
    payment_method: str | None
    enabled: bool
    armed: bool
    pending: UUID | None
    failures: int
    last_failure: str | None
    disabled_reason: str | None
    updated_at: datetime
    balance: int


_REFILL_COLUMNS = """a.account_id, a.customer, a.threshold, a.amount, a.payment_method, a.enabled, a.armed, a.pending,
    a.failures, a.last_failure, a.disabled_reason, a.updated_at, coalesce(b.credits - b.spend, 0)"""


def _refill_row(r: tuple) -> AutoRefillRow:
    values = list(r)
    for i in (2, 3, 12):
        values[i] = int(values[i]) if values[i] is not None else None
    return AutoRefillRow(*values)


async def auto_refill_of(conn: psycopg.AsyncConnection, account_id: UUID) -> AutoRefillRow | None:
    cur = await conn.execute(f"select {_REFILL_COLUMNS} from auto_refills a left join balances b using (account_id)"
                             " where a.account_id = %s", (account_id,))
    row = await cur.fetchone()
    return _refill_row(row) if row else None


async def auto_refills_to_check(conn: psycopg.AsyncConnection) -> list[AutoRefillRow]:
    """Enabled auto-refills that may need a step: below the threshold, pending, or waiting to re-arm."""
    cur = await conn.execute(
        f"""select {_REFILL_COLUMNS} from auto_refills a join balances b using (account_id)
            where a.enabled and (a.pending is not null or (a.armed and b.credits - b.spend < a.threshold)
                                 or (not a.armed and b.credits - b.spend >= a.threshold))""")
    return [_refill_row(r) for r in await cur.fetchall()]
