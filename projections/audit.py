"""`mesh audit`: replay the stream into scratch tables and compare every read model with the live one, row by row.

The replay is the rebuild's own machinery (a ProjectionRunner per read model applying the stream into a fixed
generation), pointed at a scratch schema of its own (`mesh_audit_<random>`, its connections' `search_path`): the
live schema is only read, the scratch one is dropped at the end and never put in service.

The live read models keep moving while the audit runs, so they are frozen first: in one repeatable-read
transaction the audit reads each live model's position and copies its tables into the scratch schema
(`live_<table>`); each read model is then replayed exactly up to its own frozen position, and both sides are
compared in PostgreSQL (a full join on the table's key), so a row missing on either side is a difference too.

`at` (an instant) audits the past: the replay applies only the events whose own time (`timestamp`; a refusal
count's `until`) is at or before it, and compares what the live models can still answer about that instant:
each account's balance as `balance_at` gives it (what `GET /api/balance?at=` answers), and the rows of the
append-only histories that were final by then (grants, whole hours and days of spend, requests, key changes,
template versions). Rows that change in place (keys, top-ups, templates, leases, the catalog) hold only their
latest state, so they are not compared at an instant.

What is compared, table by table, is projections/audit_comparison.py; `mesh audit verify` is
projections/audit_verify.py.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable
from uuid import UUID

import msgspec
import psycopg
from nats.aio.client import Client as NATS
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from commands.event_log import StoredMessage, decode
from domain.events import EVENT_TYPES
from domain.usage import RequestsRefused
from projections.audit_comparison import TABLES, AuditedTable, Difference, differences
from projections.billing_projection import RECENT_DAYS
from projections.partitions import month_of
from projections.readmodel import ReadModel, ensure_schema, freshness_of
from projections.runner import REPLAY_BATCH, ProjectionRunner
from projections.source import Read, StreamSource

SCRATCH_PREFIX = "mesh_audit_"
SHOWN = 100  # differences printed in full; the rest are counted
PROGRESS_EVERY = 1.0  # seconds between two progress lines
HIDDEN_TOPIC = "audit.after_at"  # what an event after `at` becomes: a topic no read model reads


class AuditResult(msgspec.Struct):
    events: int  # the stream positions the replay covered
    head: int = 0  # the stream's last position when the audit began
    differences: int = 0
    shown: list[Difference] = msgspec.field(default_factory=list)

    @property
    def summary(self) -> str:
        return f"{self.differences} differences in {self.events} events"


class _CutSource:
    """The stream as it stood at `last`; with `at`, every event whose own time is after `at` is replaced by a
    message no read model reads (positions stay contiguous, so the runner's bookkeeping is unchanged)."""

    def __init__(self, source: StreamSource, last: int, at: datetime | None):
        self.source, self.last, self.at = source, last, at
        self.stream = source.stream

    async def head(self) -> int:
        return self.last

    async def read_through(
        self, start: int, limit: int = 1000, subjects: str | None = None, timeout: float = 5.0
    ) -> Read:
        if start > self.last:
            return Read([], start - 1)
        read = await self.source.read_through(start, limit, subjects, timeout)
        messages = [m for m in read.messages if m.position <= self.last]
        if self.at is not None:
            messages = [m if self._until_at(m) else msgspec.structs.replace(m, topic=HIDDEN_TOPIC) for m in messages]
        return Read(messages, min(read.through, self.last), read.more and read.through < self.last)

    def _until_at(self, m: StoredMessage) -> bool:
        if m.topic not in EVENT_TYPES:
            return True  # not an event: the read models skip it anyway
        assert self.at is not None
        return event_time(decode(m)) <= self.at


def event_time(event: Any) -> datetime:
    """When an event happened: its `timestamp`, or for a count of refusals the last one it counts."""
    return event.until if isinstance(event, RequestsRefused) else event.timestamp


def _where(*conditions: str | None) -> str:
    present = [f"({c})" for c in conditions if c]
    return f" where {' and '.join(present)}" if present else ""


class Audit:
    """One audit run over a live database and the stream (`run`), its scratch schema dropped at the end."""

    def __init__(
        self,
        nc: NATS,
        live: AsyncConnectionPool,
        database_url: str,
        stream: str,
        models: list[ReadModel],
        open_pool: Callable[[str, int], Awaitable[AsyncConnectionPool]],
        *,
        account: UUID | None = None,
        at: datetime | None = None,
        retention_days: int,
        progress: Callable[[str], None] | None = None,
    ):
        self.nc, self.live, self.database_url, self.stream = nc, live, database_url, stream
        self.models, self.open_pool = models, open_pool  # open_pool(conninfo, size): the scratch schema's pool
        self.account, self.at = account, at
        now = datetime.now(timezone.utc)
        self.kept_from = month_of(now - timedelta(days=retention_days))
        self.recent_from = month_of(now - timedelta(days=RECENT_DAYS))
        self.progress = progress
        self.schema = SCRATCH_PREFIX + secrets.token_hex(6)
        self.tables = [t for t in TABLES if any(m.name == t.read_model for m in models)]
        if account is not None:
            self.tables = [t for t in self.tables if t.account is not None]
        if at is not None:
            self.tables = [t for t in self.tables if t.at is not None]

    def _params(self) -> dict[str, Any]:
        return {"account": self.account, "at": self.at, "kept_from": self.kept_from, "recent_from": self.recent_from}

    def _conditions(self, t: AuditedTable, side: str) -> str:
        return _where(
            t.account.format(s=side) if self.account is not None and t.account else None,
            t.at if self.at is not None else None,
            t.rows,
        )

    async def run(self) -> AuditResult:
        async with self.live.connection() as conn:
            await conn.execute(sql.SQL("create schema {}").format(sql.Identifier(self.schema)))
            await conn.commit()
        try:
            head = await StreamSource(self.nc, self.stream).head()
            positions = await self._freeze()
            await self._replay(positions)
            result = AuditResult(events=max(positions.values(), default=0), head=head)
            for table in self.tables:
                await self._compare(table, result)
            return result
        finally:
            async with self.live.connection() as conn:
                await conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(self.schema)))
                await conn.commit()

    async def _freeze(self) -> dict[str, int]:
        """Each live model's position and a copy of its tables, all as of one instant (one snapshot)."""
        async with self.live.connection() as conn:
            await conn.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
            try:
                positions = await self._copy_live(conn)
            finally:
                await conn.set_isolation_level(None)  # the pool's default again
        return positions

    async def _copy_live(self, conn: psycopg.AsyncConnection) -> dict[str, int]:
        scratch = sql.Identifier(self.schema)
        async with conn.transaction():
            positions = {m.name: (await freshness_of(conn, m))[0] for m in self.models}
            for t in self.tables:
                live = sql.Identifier(f"live_{t.table}")
                if self.at is not None and t.table == "balances":  # filled with balance_at below
                    query = sql.SQL("create table {}.{} as select account_id, credits, spend from balances where false")
                    await conn.execute(query.format(scratch, live))
                    await self._balances_at(conn)
                    continue
                query = sql.SQL("create table {}.{} as select * from {}{}").format(
                    scratch, live, sql.Identifier(t.table), sql.SQL(self._conditions(t, ""))
                )
                await conn.execute(query, self._params())
        return positions

    async def _balances_at(self, conn: psycopg.AsyncConnection) -> None:
        """The live side of `balances` at an instant: each account's balance_at, as `?at=` answers it."""
        from projections.billing import balance_at

        only = " where account_id = %(account)s" if self.account else ""
        cur = await conn.execute("select account_id from balances" + only, self._params())
        rows = []
        for (account_id,) in await cur.fetchall():
            assert self.at is not None
            b = await balance_at(conn, account_id, self.at)
            if b.credits or b.spend:
                rows.append((account_id, b.credits, b.spend))
        async with conn.cursor() as insert:
            query = sql.SQL("insert into {}.live_balances values (%s, %s, %s)")
            await insert.executemany(query.format(sql.Identifier(self.schema)), rows)

    async def _replay(self, positions: dict[str, int]) -> None:
        url = make_conninfo(self.database_url, options=f"-c search_path={self.schema}")
        pool = await self.open_pool(url, len(self.models) + 1)
        try:
            async with pool.connection() as conn:
                await ensure_schema(conn, self.models)
            source = StreamSource(self.nc, self.stream)
            runners = [
                ProjectionRunner(
                    m,
                    _CutSource(source, positions[m.name], self.at),  # type: ignore[arg-type]
                    pool,
                    generation=1,
                    batch_size=REPLAY_BATCH,
                )
                for m in self.models
            ]
            total = max(positions.values(), default=0)
            done = asyncio.Event()

            async def report() -> None:
                started = time.monotonic()
                while not done.is_set():
                    try:
                        await asyncio.wait_for(done.wait(), PROGRESS_EVERY)
                    except asyncio.TimeoutError:
                        reached = min(min(r.position, positions[r.model.name]) for r in runners)
                        rate = reached / max(time.monotonic() - started, 1e-9)
                        if self.progress:
                            self.progress(f"audit: {reached}/{total} events replayed ({rate:,.0f} events/s)")

            reporter = asyncio.create_task(report())
            try:
                await asyncio.gather(*(r.catch_up() for r in runners))
            finally:
                done.set()
                await reporter
                await source.close()
        finally:
            await pool.close()

    async def _compare(self, t: AuditedTable, result: AuditResult) -> None:
        scratch = sql.Identifier(self.schema)
        on = sql.SQL(" and ").join(sql.SQL("l.{0} = r.{0}").format(sql.Identifier(k)) for k in t.key)
        query = sql.SQL(
            "select to_jsonb(l), to_jsonb(r)"
            " from {scratch}.{live} l full join (select * from {scratch}.{table}{where}) r on {on}"
            " where to_jsonb(l) is distinct from to_jsonb(r)"
            " order by {order}"
        ).format(
            scratch=scratch,
            live=sql.Identifier(f"live_{t.table}"),
            table=sql.Identifier(t.table),
            where=sql.SQL(self._conditions(t, f'"{self.schema}".')),
            on=on,
            order=sql.SQL(", ").join(sql.SQL("coalesce(l.{0}, r.{0})").format(sql.Identifier(k)) for k in t.key),
        )
        async with self.live.connection() as conn:
            async with conn.cursor(name=f"audit_{t.table}") as cur:
                await cur.execute(query, self._params())
                async for live, replayed in cur:
                    for difference in differences(t, live, replayed):
                        result.differences += 1
                        if len(result.shown) < SHOWN:
                            result.shown.append(difference)
