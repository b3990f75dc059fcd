"""Request logs read model: one row per request through the gateway, for finding and explaining calls.

Separate from billing on purpose: rebuilding it, or dropping old months (retention), never touches money.
`logs` is partitioned by month of the request's time. Its indexes start with the account (and the key, the
model, or only failed requests), then (time, trace_id), the order pages are read in (newest first), then
every other filtered column: the remaining filters are checked inside the index, so a page reads the heap
only for the rows it returns, and stops after `limit` of them however deep the cursor. Key labels are joined
at query time from the directory (a label changed later shows everywhere).

A usage event published twice (see projections/billing_projection.py) is kept once: (trace_id, time) is the key,
which a rebuild adds once the rows are in (a key built by one sort, not one entry per row inserted).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import AsyncIterator
from uuid import UUID

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from domain.events import event_names
from domain.usage import Attempt, BodyRecorded, UsageRecorded
from projections.columns import EventColumns, chunks
from projections.partitions import drop_months_before, ensure_months
from projections.readmodel import Envelope, ReadModel, active_generation, physical_tables

RETENTION_DAYS = 90  # MESH_LOG_RETENTION_DAYS
MAX_PAGE = 500


class Logs:
    name = "logs"
    tables = ("logs",)
    topics = event_names((UsageRecorded,))

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        logs = t["logs"]
        await cur.execute(f"""
            create table if not exists {logs} (
                trace_id uuid not null,
                time timestamptz not null,
                account_id uuid not null,
                key_id uuid not null,
                model text not null,
                requested_model text,
                provider text not null,
                status text not null,
                http_status int not null,
                error text,
                stream boolean not null,
                estimated boolean not null,
                prompt_tokens bigint not null,
                completion_tokens bigint not null,
                cached_prompt_tokens bigint not null,
                cache_write_tokens bigint not null,
                reasoning_tokens bigint not null,
                prompt_per_1k numeric(40, 0) not null,
                completion_per_1k numeric(40, 0) not null,
                cost numeric(40, 0) not null,
                latency_us bigint not null,
                upstream_us bigint not null,
                first_token_us bigint,
                request_id text,
                lease_id uuid,
                template_id uuid,
                template_version int,
                api text,
                attempts jsonb
            ) partition by range (time);
            alter table {logs} add column if not exists api text;
            alter table {logs} add column if not exists attempts jsonb;
        """)

    primary_keys = {"logs": ("trace_id", "time")}  # a rebuild adds it after the rows (readmodel.build_indexes)

    def indexes(self, t: dict[str, str]) -> list[str]:
        logs = t["logs"]
        return [
            f"""create index if not exists {logs}_account on {logs}
                (account_id, time, trace_id, model, key_id, provider, latency_us, status)""",
            f"""create index if not exists {logs}_errors on {logs}
                (account_id, time, trace_id, model, key_id, provider, latency_us) where status <> 'ok'""",
            f"""create index if not exists {logs}_key on {logs}
                (account_id, key_id, time, trace_id, model, provider, latency_us, status)""",
            f"""create index if not exists {logs}_model on {logs}
                (account_id, model, time, trace_id, key_id, latency_us, status)""",
            f"create index if not exists {logs}_time on {logs} (time, trace_id)",
        ]

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        rows = [item.event for item in batch if type(item.event) is UsageRecorded]
        if rows:
            await insert(cur, t["logs"], rows)


async def insert(cur: psycopg.AsyncCursor, table: str, events: list) -> None:
    """The projection's write: a statement per chunk of the batch, in a pipeline (the bench's bulk setup runs this
    too). Without a conflict target it skips a request logged before while the table has its primary key, and
    keeps every row while a rebuild fills it (the key comes after the rows: `readmodel.build_indexes`)."""
    await ensure_months(cur, table, (e.timestamp for e in events))
    query = f"insert into {table} ({_ROWS.columns}) select * from {_ROWS.rows} on conflict do nothing"
    async with cur.connection.pipeline():
        for chunk in chunks(events):
            await cur.execute(query, _ROWS.params(chunk))


class LogBodies:
    """Request and response bodies (MESH_LOG_BODIES=on), read from the bodies stream (not the log), kept
    apart from the log rows and trimmed by the same retention."""

    name = "log_bodies"
    tables = ("log_bodies",)
    topics = event_names((BodyRecorded,))

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t["log_bodies"]} (
                trace_id uuid not null,
                time timestamptz not null,
                account_id uuid not null,
                request text not null,
                response text,
                truncated boolean not null,
                primary key (trace_id, time)
            ) partition by range (time);
        """)

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        bodies = [item.event for item in batch if type(item.event) is BodyRecorded]
        if not bodies:
            return
        await ensure_months(cur, t["log_bodies"], (b.timestamp for b in bodies))
        await cur.executemany(
            f"insert into {t['log_bodies']} (trace_id, time, account_id, request, response, truncated)"
            " values (%s, %s, %s, %s, %s, %s) on conflict (trace_id, time) do nothing",
            [(b.trace_id, b.timestamp, b.account_id, b.request, b.response, b.truncated) for b in bodies],
        )


# What a log row keeps of a usage event, and the column types.
_ROWS = EventColumns(
    {
        "trace_id": "uuid",
        "timestamp": "timestamptz",
        "account_id": "uuid",
        "key_id": "uuid",
        "model": "text",
        "requested_model": "text",
        "provider": "text",
        "status": "text",
        "http_status": "int",
        "error": "text",
        "stream": "boolean",
        "estimated": "boolean",
        "prompt_tokens": "bigint",
        "completion_tokens": "bigint",
        "cached_prompt_tokens": "bigint",
        "cache_write_tokens": "bigint",
        "reasoning_tokens": "bigint",
        "prompt_per_1k": "numeric",
        "completion_per_1k": "numeric",
        "cost": "numeric",
        "latency_us": "bigint",
        "upstream_us": "bigint",
        "first_token_us": "bigint",
        "request_id": "text",
        "lease_id": "uuid",
        "template_id": "uuid",
        "template_version": "int",
        "api": "text",
        "attempts": "jsonb",
    }
)


async def trim(pool: AsyncConnectionPool, model: ReadModel, days: int, now: datetime | None = None) -> list[str]:
    """Retention: drop the months of the model in service that ended more than `days` ago (whole partitions).
    Only log tables are touched."""
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    async with pool.connection() as conn:
        async with conn.transaction():
            generation = await active_generation(conn, model)
            async with conn.cursor() as cur:
                return [
                    name
                    for table in physical_tables(model, generation).values()
                    for name in await drop_months_before(cur, table, cutoff)
                ]


# Queries (they read the views, i.e. the generation in service).

STATUSES = {"success": "l.status = 'ok'", "error": "l.status <> 'ok'"}


class LogFilter(msgspec.Struct, frozen=True, kw_only=True):
    account_id: UUID | None = None  # None: every account (the operator's view)
    start: datetime | None = None
    end: datetime | None = None
    model: str | None = None
    provider: str | None = None
    key_id: UUID | None = None
    status: str | None = None  # a key of STATUSES
    min_latency_ms: int | None = None


class LogRow(msgspec.Struct, frozen=True):
    trace_id: UUID
    time: datetime
    account_id: UUID
    key_id: UUID
    key_label: str | None
    model: str
    requested_model: str | None
    provider: str
    status: str  # "ok" | "error", as on the event
    http_status: int
    error: str | None
    stream: bool
    estimated: bool
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost: int  # pico-USD
    latency_us: int
    upstream_us: int
    first_token_us: int | None
    template_id: UUID | None
    template_version: int | None
    api: str | None  # the front door (domain.usage.Api); None for requests logged before Mesh recorded it
    attempts: list[Attempt] = []  # its upstream calls, when more than one (retries, fallbacks)


_SELECT = """select l.trace_id, l.time, l.account_id, l.key_id, k.label, l.model, l.requested_model, l.provider,
    l.status, l.http_status, l.error, l.stream, l.estimated, l.prompt_tokens, l.completion_tokens,
    l.cached_prompt_tokens, l.cache_write_tokens, l.reasoning_tokens, l.cost, l.latency_us, l.upstream_us,
    l.first_token_us, l.template_id, l.template_version, l.api, l.attempts
    from logs l left join api_keys k on k.key_id = l.key_id"""


def _row(r: tuple) -> LogRow:
    values = list(r)
    values[18] = int(values[18])
    values[25] = msgspec.convert(values[25], list[Attempt]) if values[25] else []
    return LogRow(*values)


def _where(
    f: LogFilter, after: tuple[datetime, UUID] | None, before: tuple[datetime, UUID] | None = None
) -> tuple[str, list]:
    """The WHERE clause of a page. With a cursor, the time column gets one upper bound, the tighter of `end`
    and the cursor: given both (`time < end` and the row comparison), PostgreSQL cannot tell which is tighter
    and may start the index scan at `end`, reading every entry between it and the cursor: a deep page would
    cost as much as all the pages before it. The cursor's own bound is then both a scalar `time <=` (index
    start, partition pruning) and the row comparison (ties on time). A `before` cursor (the newer page) is the
    mirror image: one lower bound, the tighter of `start` and the cursor."""
    conditions, params = [], []
    # with a cursor at or past `end`, every row before `end` is before the cursor: `end` alone bounds the page
    cursor_bounds = after is not None and (f.end is None or after[0] < f.end)
    end = None if cursor_bounds else f.end
    # with a `before` cursor earlier than `start`, every row from `start` on is after it: `start` alone bounds
    newer_bounds = before is not None and (f.start is None or before[0] >= f.start)
    start = None if newer_bounds else f.start
    for sql, value in (
        ("l.account_id = %s", f.account_id),
        ("l.time >= %s", start),
        ("l.time < %s", end),
        ("l.model = %s", f.model),
        ("l.provider = %s", f.provider),
        ("l.key_id = %s", f.key_id),
        ("l.latency_us >= %s", f.min_latency_ms * 1000 if f.min_latency_ms is not None else None),
    ):
        if value is not None:
            conditions.append(sql)
            params.append(value)
    if f.status is not None:
        conditions.append(STATUSES[f.status])
    if cursor_bounds:
        assert after is not None
        conditions.append("l.time <= %s and (l.time, l.trace_id) < (%s, %s)")
        params += [after[0], *after]
    if newer_bounds:
        assert before is not None
        conditions.append("l.time >= %s and (l.time, l.trace_id) > (%s, %s)")
        params += [before[0], *before]
    return (" where " + " and ".join(conditions) if conditions else ""), params


async def page(
    conn: psycopg.AsyncConnection,
    f: LogFilter,
    limit: int,
    after: tuple[datetime, UUID] | None = None,
    before: tuple[datetime, UUID] | None = None,
) -> list[LogRow]:
    """Up to `limit` entries, newest first, strictly after the keyset position `after` (time, trace id); with
    `before`, the `limit` entries nearest before that position (read oldest first from it, then turned), still
    newest first."""
    where, params = _where(f, after, before)
    order = "asc" if before is not None else "desc"
    cur = await conn.execute(f"{_SELECT}{where} order by l.time {order}, l.trace_id {order} limit %s", [*params, limit])
    rows = [_row(r) for r in await cur.fetchall()]
    return rows[::-1] if before is not None else rows


async def entry(conn: psycopg.AsyncConnection, trace_id: UUID, account_id: UUID | None) -> LogRow | None:
    """One request by trace id; None when there is none, or it belongs to another account than `account_id`."""
    where, params = _where(LogFilter(account_id=account_id), None)
    cur = await conn.execute(
        f"{_SELECT}{where}{' and' if where else ' where'} l.trace_id = %s limit 1", [*params, trace_id]
    )
    row = await cur.fetchone()
    return _row(row) if row else None


class Bodies(msgspec.Struct, frozen=True):
    request: str
    response: str | None
    truncated: bool


async def bodies_of(conn: psycopg.AsyncConnection, trace_id: UUID, account_id: UUID | None) -> Bodies | None:
    cur = await conn.execute(
        "select request, response, truncated from log_bodies where trace_id = %s"
        " and (%s::uuid is null or account_id = %s) limit 1",
        (trace_id, account_id, account_id),
    )
    row = await cur.fetchone()
    return Bodies(*row) if row else None


async def every(conn: psycopg.AsyncConnection, f: LogFilter, chunk: int = 2000) -> AsyncIterator[LogRow]:
    """Every matching entry, newest first, through a server-side cursor: memory stays constant at any size.
    The caller holds `conn` in a transaction for the duration."""
    where, params = _where(f, None)
    async with conn.cursor(name="logs_export") as cur:
        cur.itersize = chunk
        await cur.execute(f"{_SELECT}{where} order by l.time desc, l.trace_id desc", params)
        async for r in cur:
            yield _row(r)


class LatencyBucket(msgspec.Struct, frozen=True):
    bucket: str  # the hour or day's start, as a spend history names it ("2026-11-30T13:00:00Z")
    requests: int
    p50_us: int  # total latency (from the request's arrival to its answer's end), microseconds
    p95_us: int


BUCKETS = ("hour", "day")


async def latency_by_bucket(
    conn: psycopg.AsyncConnection, account_id: UUID, unit: str, start: datetime, end: datetime
) -> list[LatencyBucket]:
    """The median and 95th percentile of the total latency of the account's logged requests (errors included)
    per hour or day (UTC) of [start, end): `percentile_disc`, so each is a latency some request had. The account's
    index holds (time, latency_us): an index-only scan of the range."""
    if unit not in BUCKETS:
        raise ValueError(f"unit is one of {BUCKETS}, got {unit!r}")
    cur = await conn.execute(
        """select date_trunc(%s, l.time at time zone 'UTC'), count(*),
                  percentile_disc(0.5) within group (order by l.latency_us),
                  percentile_disc(0.95) within group (order by l.latency_us)
           from logs l where l.account_id = %s and l.time >= %s and l.time < %s group by 1 order by 1""",
        (unit, account_id, start, end),
    )
    return [LatencyBucket(b.isoformat() + "Z", n, p50, p95) for b, n, p50, p95 in await cur.fetchall()]
