"""Request logs of an account (or of every account, for the operator): pages by cursor, one entry."""

from __future__ import annotations

from typing import AsyncGenerator, cast
from uuid import UUID

import msgspec
import psycopg

from psycopg_pool import AsyncConnectionPool

from api.exports import CONNECT_SECONDS, ExportGate
from api.read_models import LOGS
from api.services.as_of import AsOf
from projections import billing, logs
from projections.readmodel import position_of


class LogPage(msgspec.Struct):
    rows: list[logs.LogRow]
    more: bool  # another page follows the last row
    as_of: AsOf


class LogEntry(msgspec.Struct):
    row: logs.LogRow
    bodies: logs.Bodies | None
    as_of: AsOf


class LogService:
    def __init__(self, pool: AsyncConnectionPool, exports: ExportGate, database_url: str, export_idle_seconds: float):
        self.pool = pool
        self.exports = exports  # the log exports running, one per account
        self.database_url = database_url  # an export reads on a connection of its own
        self.export_idle_seconds = export_idle_seconds  # how long an export's write may wait for its client

    async def page(self, f: logs.LogFilter, limit: int, after=None) -> LogPage:
        """Newest first, `limit` rows after the cursor position `after` ((time, trace_id) or None)."""
        async with self.pool.connection() as conn:
            async with conn.transaction():  # entries and position from one snapshot
                await conn.execute("set transaction isolation level repeatable read")
                rows = await logs.page(conn, f, limit + 1, after)
                position, time = await position_of(conn, LOGS)
        return LogPage(rows[:limit], len(rows) > limit, AsOf(position, time))

    async def refusals(self, f: logs.LogFilter) -> dict[str, int]:
        """Requests refused (before reaching a model) in the filter's range and key, by error code: they are
        counted, not logged one by one (gateway/refusals.py)."""
        if f.account_id is None:
            return {}
        async with self.pool.connection() as conn:
            found = await billing.refusals_by_key(conn, f.account_id, f.start, f.end, f.key_id)
        total: dict[str, int] = {}
        for counts in found.values():
            for code, n in counts.items():
                total[code] = total.get(code, 0) + n
        return total

    async def entry(self, account_id: UUID | None, trace_id: UUID) -> LogEntry | None:
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("set transaction isolation level repeatable read")
                row = await logs.entry(conn, trace_id, account_id)
                bodies = await logs.bodies_of(conn, trace_id, account_id) if row is not None else None
                position, time = await position_of(conn, LOGS)
        return LogEntry(row, bodies, AsOf(position, time)) if row is not None else None

    async def export(self, account_id: UUID, f: logs.LogFilter) -> tuple[AsOf, AsyncGenerator[logs.LogRow, None]]:
        """Every matching entry, newest first, and the position they are as of, from one snapshot; a 429 while
        the account has an export running (api/exports.py). The rows stream from a server-side cursor
        (constant memory at millions of rows) on a connection of the export's own, not the pool's; it and the
        account's slot are held until the iterator is exhausted or closed."""
        stream = self._snapshot_rows(account_id, f)
        as_of = cast(AsOf, await anext(stream))  # the first item; every later one is a LogRow
        return as_of, cast(AsyncGenerator[logs.LogRow, None], stream)

    async def _snapshot_rows(self, account_id: UUID, f: logs.LogFilter) -> AsyncGenerator[AsOf | logs.LogRow, None]:
        with self.exports.hold(account_id):
            conn = await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=CONNECT_SECONDS)
            async with conn:
                async with conn.transaction():
                    await conn.execute("set transaction isolation level repeatable read, read only")
                    position, time = await position_of(conn, LOGS)
                    yield AsOf(position, time)
                    async for row in logs.every(conn, f):
                        yield row
