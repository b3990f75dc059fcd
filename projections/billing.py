"""Billing read model: per-account credits and spend, per-key spend, and spend rolled up by hour and by day.

Per-request rows are not kept here for long: the request logs are a read model of their own
(projections/logs.py), so trimming or rebuilding them never touches money. What billing keeps of each request
is a compact row in `usage_recent` (trace id, time, what money groups by, tokens, cost), for two jobs:

- Exactly once. A usage event is counted once: (trace id, event time) is the key of `usage_recent`, and only
  rows actually inserted move a balance or a rollup. A usage event appears twice on the stream only when the
  gateway re-publishes the same encoded event (a retried publish past JetStream's 2-minute duplicate window,
  a replayed spool), so the copy has the same trace id and the same time.
- Instants between hours. `?at=` balances and `from`/`to` windows are answered from the daily and hourly
  rollups for whole days and hours, and from `usage_recent` for the part of an hour at either edge.

`usage_recent` is partitioned by month and keeps RECENT_DAYS: a month is dropped once the stream's own time
(not the clock, so a rebuild drops at the same events as the live model did) is RECENT_DAYS past its end.
Consequences, both only for events or instants older than that: a usage event re-published more than
RECENT_DAYS after it happened (a spool kept that long) is counted even if its first copy was; and an `at`,
`from` or `to` older than that is answered to the hour (the partial hour at that edge is left out).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone
from uuid import UUID

import msgspec
import psycopg

from domain.events import EVENT_TYPES
from domain.usage import UsageRecorded
from projections.columns import EventColumns
from projections.partitions import drop_months_before, ensure_months
from projections.readmodel import Envelope

RECENT_DAYS = 35  # how long billing keeps a compact row per request (see the module docstring)


class Balance(msgspec.Struct, frozen=True):
    credits: int  # pico-USD
    spend: int

    @property
    def available(self) -> int:
        return self.credits - self.spend


class Billing:
    name = "billing"
    tables = (
        "balances",
        "key_spend",
        "usage_recent",
        "spend_hourly",
        "spend_daily",
        "credit_grants",
        "leases",
        "topups",
        "auto_refills",
    )
    topics = frozenset(
        {
            "account.registered",
            "account.credits_granted",
            "account.credits_debited",
            "usage.recorded",
            "account.budget_leased",
            "account.lease_settled",
            "account.lease_extended",
        }
        | {name for name in EVENT_TYPES if name.startswith(("topup.", "account.auto_refill_"))}
        | {"account.stripe_customer_linked"}
    )

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        rollups = "".join(
            f"""
            create table if not exists {t[table]} (
                account_id uuid not null,
                time timestamptz not null,  -- the {unit} the requests began in (UTC)
                key_id uuid not null,
                provider text not null,
                model text not null,
                {", ".join(f"{c} bigint not null" for c in _ROLLUP_SUMS.split(", ")[:-1])},
                spend numeric(40, 0) not null,
                primary key (account_id, time, key_id, provider, model)
            );"""
            for table, unit in _ROLLUPS.items()
        )
        await cur.execute(f"""
            create table if not exists {t["balances"]} (
                account_id uuid primary key,
                credits numeric(40, 0) not null default 0,
                spend numeric(40, 0) not null default 0
            );
            create table if not exists {t["key_spend"]} (
                key_id uuid primary key,
                account_id uuid not null,
                requests bigint not null default 0,
                errors bigint not null default 0,
                prompt_tokens bigint not null default 0,
                completion_tokens bigint not null default 0,
                spend numeric(40, 0) not null default 0
            );
            create table if not exists {t["credit_grants"]} (
                position bigint primary key,
                account_id uuid not null,
                amount numeric(40, 0) not null,
                reason text not null,
                granted_by text not null,
                time timestamptz not null
            );
            create table if not exists {t["usage_recent"]} (
                trace_id uuid not null,
                time timestamptz not null,
                account_id uuid not null,
                key_id uuid not null,
                provider text not null,
                model text not null,
                status text not null,
                prompt_tokens bigint not null,
                completion_tokens bigint not null,
                cached_prompt_tokens bigint not null,
                cache_write_tokens bigint not null,
                reasoning_tokens bigint not null,
                cost numeric(40, 0) not null,
                lease_id uuid,
                primary key (trace_id, time)
            ) partition by range (time);
            create index if not exists {t["usage_recent"]}_account_time on {t["usage_recent"]} (account_id, time);
            {rollups}
            create table if not exists {t["leases"]} (
                lease_id uuid primary key,
                account_id uuid not null,
                key_id uuid not null,
                amount numeric(40, 0) not null,
                spent numeric(40, 0) not null default 0,  -- from usage events paid by this lease
                expires_at timestamptz not null,
                settled boolean not null default false
            );
            create index if not exists {t["leases"]}_open on {t["leases"]} (expires_at) where not settled;
            create table if not exists {t["topups"]} (
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
            create index if not exists {t["topups"]}_account on {t["topups"]} (account_id, created_at);
            create table if not exists {t["auto_refills"]} (
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
        usage = []
        streamed = []  # when each usage event reached the stream
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
                await cur.execute(
                    f"update {t['leases']} set expires_at = %s where lease_id = %s", (e.expires_at, e.lease_id)
                )
            elif item.topic == "usage.recorded":
                usage.append(e)
                streamed.append(item.time)
        if credits:
            await cur.executemany(
                f"""insert into {t["balances"]} (account_id, credits) values (%s, %s)
                    on conflict (account_id) do update set credits = {t["balances"]}.credits + excluded.credits""",
                list(credits.items()),
            )
        if usage:
            stream_time = min(streamed)
            await drop_months_before(cur, t["usage_recent"], stream_time - timedelta(days=RECENT_DAYS))
            await ensure_months(cur, t["usage_recent"], (e.timestamp for e in usage))
            await self._apply_usage(cur, t, usage)

    async def _apply_topup(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        if item.topic == "topup.requested":
            await cur.execute(
                f"""insert into {t["topups"]} (topup_id, account_id, provider, reference, amount, status,
                    expires_at, created_at, updated_at) values (%s, %s, %s, %s, %s, 'pending', %s, %s, %s)""",
                (
                    e.originator_id,
                    e.account_id,
                    e.provider,
                    e.reference,
                    e.amount,
                    e.expires_at,
                    e.timestamp,
                    e.timestamp,
                ),
            )
            return
        change = {
            "topup.succeeded": ("status = 'succeeded', received = %s", lambda: (e.amount,)),
            "topup.failed": ("failures = failures + 1, last_failure = %s", lambda: (e.reason,)),
            "topup.expired": ("status = 'expired'", lambda: ()),
            "topup.refunded": ("refunded = %s", lambda: (e.total_refunded,)),
            "topup.disputed": ("disputed = disputed + %s", lambda: (e.amount,)),
            # held until the payment arrives; the money moves with topup.refunded / topup.disputed then
            "topup.refund_held": ("status = status", lambda: ()),
            "topup.dispute_held": ("status = status", lambda: ()),
        }[item.topic]
        await cur.execute(
            f"update {t['topups']} set {change[0]}, updated_at = %s where topup_id = %s",
            (*change[1](), e.timestamp, e.originator_id),
        )

    async def _apply_auto_refill(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        columns = {
            "account.stripe_customer_linked": lambda: {"customer": e.customer_id},
            "account.auto_refill_configured": lambda: {
                "threshold": e.threshold,
                "amount": e.amount,
                "payment_method": e.payment_method,
                "max_failures": e.max_failures,
                "enabled": True,
                "armed": True,
                "pending": None,
                "failures": 0,
                "disabled_reason": None,
            },
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
            f"""insert into {t["auto_refills"]} as a (account_id, {", ".join(names)}, updated_at)
                values (%s, {", ".join(["%s"] * len(names))}, %s)
                on conflict (account_id) do update set
                {", ".join(f"{n} = excluded.{n}" for n in names)}{increment}, updated_at = excluded.updated_at""",
            (e.originator_id, *columns.values(), e.timestamp),
        )

    async def _apply_usage(self, cur: psycopg.AsyncCursor, t: dict[str, str], events: list[UsageRecorded]) -> None:
        """The whole batch in one statement: insert the requests not seen before (by trace id and time), and add
        only what was inserted to the balances, leases, per-key totals and the hourly and daily rollups."""
        rollups = "".join(
            f"""
                ), {table} as (
                    insert into {t[table]} as s (account_id, time, key_id, provider, model, {_ROLLUP_SUMS})
                    select account_id, date_trunc('{unit}', time, 'UTC'), key_id, provider, model, count(*),
                        count(*) filter (where status <> 'ok'), {", ".join(f"sum({c})" for c in _TOKENS)}, sum(cost)
                    from new group by 1, 2, 3, 4, 5
                    on conflict (account_id, time, key_id, provider, model) do update set
                        {", ".join(f"{c} = s.{c} + excluded.{c}" for c in _ROLLUP_SUMS.split(", "))}"""
            for table, unit in _ROLLUPS.items()
        )
        await cur.execute(
            f"""with new as (
                    insert into {t["usage_recent"]} ({_RECENT.columns}) select * from {_RECENT.rows}
                    on conflict (trace_id, time) do nothing
                    returning *
                ), accounts as (
                    insert into {t["balances"]} as b (account_id, spend)
                    select account_id, sum(cost) from new group by account_id
                    on conflict (account_id) do update set spend = b.spend + excluded.spend
                ), lease_spend as (
                    update {t["leases"]} l set spent = l.spent + s.amount
                    from (select lease_id, sum(cost) as amount from new where lease_id is not null group by lease_id) s
                    where l.lease_id = s.lease_id{rollups}
                )
                insert into {t["key_spend"]} as k
                    (key_id, account_id, requests, errors, prompt_tokens, completion_tokens, spend)
                select key_id, account_id, count(*), count(*) filter (where status <> 'ok'), sum(prompt_tokens),
                    sum(completion_tokens), sum(cost) from new group by key_id, account_id
                on conflict (key_id) do update set requests = k.requests + excluded.requests,
                    errors = k.errors + excluded.errors, prompt_tokens = k.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = k.completion_tokens + excluded.completion_tokens,
                    spend = k.spend + excluded.spend""",
            _RECENT.params(events),
        )


# What billing keeps of a usage event, and the column types.
_RECENT = EventColumns(
    {
        "trace_id": "uuid",
        "timestamp": "timestamptz",
        "account_id": "uuid",
        "key_id": "uuid",
        "provider": "text",
        "model": "text",
        "status": "text",
        "prompt_tokens": "bigint",
        "completion_tokens": "bigint",
        "cached_prompt_tokens": "bigint",
        "cache_write_tokens": "bigint",
        "reasoning_tokens": "bigint",
        "cost": "numeric",
        "lease_id": "uuid",
    }
)
_TOKENS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")
_ROLLUP_SUMS = ", ".join(("requests", "errors", *_TOKENS, "spend"))
_ROLLUPS = {"spend_hourly": "hour", "spend_daily": "day"}  # rollup table: the time unit it sums over


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


async def key_stats(
    conn: psycopg.AsyncConnection, account_id: UUID, start: datetime | None = None, end: datetime | None = None
) -> dict[UUID, KeyStats]:
    """Per-key totals for the account: all time, or over [start, end) when either is given."""
    if start is None and end is None:
        cur = await conn.execute(
            "select key_id, requests, errors, prompt_tokens, completion_tokens, spend from key_spend"
            " where account_id = %s",
            (account_id,),
        )
        return {r[0]: KeyStats(*(int(v) for v in r[1:])) for r in await cur.fetchall()}
    return {
        UUID(row.group["key"]): KeyStats(row.requests, row.errors, row.prompt_tokens, row.completion_tokens, row.spend)
        for row in await spend_history(conn, account_id, ["key"], start, end)
    }


async def balance_at(conn: psycopg.AsyncConnection, account_id: UUID, at: datetime) -> Balance:
    """Credits and spend as they stood at `at` (inclusive): grants up to then, spend from the rollups and
    `usage_recent` (see the module docstring for instants older than RECENT_DAYS)."""
    cur = await conn.execute(
        "select coalesce(sum(amount), 0) from credit_grants where account_id = %s and time <= %s", (account_id, at)
    )
    credits = (await cur.fetchone())[0]
    spent = await spend_history(conn, account_id, [], None, at + timedelta(microseconds=1))
    return Balance(int(credits), spent[0].spend if spent else 0)


SPEND_GROUPS = {
    "provider": "provider",
    "model": "model",
    "key": "key_id",
    "day": "date_trunc('day', time at time zone 'UTC')",
    "hour": "date_trunc('hour', time at time zone 'UTC')",
}
# What ?group_by= takes, as the OpenAPI document states it: names of SPEND_GROUPS, comma-separated
GROUP_BY_PATTERN = r"^\s*({0})?\s*(,\s*({0})?\s*)*$".format("|".join(SPEND_GROUPS))
GROUP_BY_RULE = f"group_by takes a comma-separated list of {', '.join(SPEND_GROUPS)}"


class SpendRow(msgspec.Struct):
    group: dict[str, str]
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend: int  # pico-USD
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


# Where spend over a window comes from, coarsest first: whole days, whole hours, then single requests.
_DAY, _HOUR = timedelta(days=1), timedelta(hours=1)
_EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
_LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)
_ROLLUP_VALUES = _ROLLUP_SUMS
_RECENT_VALUES = "1, (status <> 'ok')::int, " + ", ".join(_TOKENS) + ", cost"


def _floor(t: datetime, unit: timedelta) -> datetime:
    t = t.astimezone(timezone.utc)
    return t.replace(hour=0 if unit == _DAY else t.hour, minute=0, second=0, microsecond=0)


def _ceil(t: datetime, unit: timedelta) -> datetime:
    floor = _floor(t, unit)
    return floor if floor == t else floor + unit


def _spend_sources(start: datetime | None, end: datetime | None, by_hour: bool) -> list[tuple[str, str, tuple]]:
    """(table, value columns, (from, to, hole from, hole to)) for each source that has a part of
    [start, end): each covers its range less the range of the coarser source before it (the hole)."""
    start, end = start or _EARLIEST, end or _LATEST
    ranges = [
        ("spend_daily", _ROLLUP_VALUES, (_ceil(start, _DAY), _floor(end, _DAY)) if not by_hour else None),
        ("spend_hourly", _ROLLUP_VALUES, (_ceil(start, _HOUR), _floor(end, _HOUR))),
        ("usage_recent", _RECENT_VALUES, (start, end)),
    ]
    sources, hole = [], None
    for table, values, span in ranges:
        if span is None or span[0] >= span[1]:
            continue
        if hole is None or span[0] < hole[0] or span[1] > hole[1]:
            sources.append((table, values, (*span, *(hole or (_LATEST, _LATEST)))))
        hole = span
    return sources


async def spend_history(
    conn: psycopg.AsyncConnection, account_id: UUID, group_by: list[str], start: datetime | None, end: datetime | None
) -> list[SpendRow]:
    """Spend over [start, end) grouped by any of provider, model, key, day, hour (UTC), exact to the request:
    whole days from `spend_daily`, whole hours from `spend_hourly`, the partial hours at the edges from
    `usage_recent` (older edges: see the module docstring)."""
    columns = [SPEND_GROUPS[g] for g in group_by]
    select = "".join(f"{c} as g{i}, " for i, c in enumerate(columns))
    group = f"group by {', '.join(f'g{i}' for i in range(len(columns)))} order by 1" if columns else ""
    parts, params = [], []
    for table, values, bounds in _spend_sources(start, end, "hour" in group_by):
        parts.append(f"""select key_id, provider, model, time, {values} from {table}
                         where account_id = %s and time >= %s and time < %s and (time < %s or time >= %s)""")
        params += [account_id, *bounds]
    if not parts:
        return []
    cur = await conn.execute(
        f"""select {select} {", ".join(f"coalesce(sum({c}), 0)" for c in _ROLLUP_SUMS.split(", "))}
            from ({" union all ".join(parts)}) as u ({"key_id, provider, model, time, " + _ROLLUP_SUMS}) {group}""",
        params,
    )
    rows = []
    for r in await cur.fetchall():
        keys = r[: len(columns)]
        requests, errors, prompt, completion, cached, cache_write, reasoning, spend = (
            int(v) for v in r[len(columns) :]
        )
        group_values = {g: (v.isoformat() + "Z" if isinstance(v, datetime) else str(v)) for g, v in zip(group_by, keys)}
        rows.append(SpendRow(group_values, requests, errors, prompt, completion, spend, cached, cache_write, reasoning))
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
        (account_id,),
    )
    return [
        TopUpRow(r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]), r[8], r[9], r[10], r[11])
        for r in await cur.fetchall()
    ]


async def due_to_expire(conn: psycopg.AsyncConnection) -> list[tuple[str, str]]:
    cur = await conn.execute(
        "select provider, reference from topups where status = 'pending' and expires_at < now() limit 100"
    )
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
    cur = await conn.execute(
        f"select {_REFILL_COLUMNS} from auto_refills a left join balances b using (account_id) where a.account_id = %s",
        (account_id,),
    )
    row = await cur.fetchone()
    return _refill_row(row) if row else None


async def auto_refills_to_check(conn: psycopg.AsyncConnection) -> list[AutoRefillRow]:
    """Enabled auto-refills that may need a step: below the threshold, pending, or waiting to re-arm."""
    cur = await conn.execute(
        f"""select {_REFILL_COLUMNS} from auto_refills a join balances b using (account_id)
            where a.enabled and (a.pending is not null or (a.armed and b.credits - b.spend < a.threshold)
                                 or (not a.armed and b.credits - b.spend >= a.threshold))"""
    )
    return [_refill_row(r) for r in await cur.fetchall()]


async def pending_topups(conn: psycopg.AsyncConnection, account_id: UUID, since: datetime) -> int:
    """How many of the account's top-ups started since `since` are still pending (not paid, expired)."""
    cur = await conn.execute(
        "select count(*) from topups where account_id = %s and status = 'pending' and created_at >= %s",
        (account_id, since),
    )
    return (await cur.fetchone())[0]
