"""Request logs of an account (or of every account, for the operator): pages by cursor, one entry."""

from __future__ import annotations

from datetime import datetime
from typing import AsyncGenerator, cast
from uuid import UUID

import msgspec
import psycopg

from psycopg_pool import AsyncConnectionPool

from api.exports import CONNECT_SECONDS, ExportGate, LogExport
from api.log_entries import EXPORT_FORMATS, export_lines
from api.read_models import LOGS
from api.services.read_your_writes import ReadModelWaiter
from api.services.as_of import AsOf, read_as_of
from api.services.errors import Invalid
from projections import billing, logs


class LogPage(msgspec.Struct):
    rows: list[logs.LogRow]
    more: bool  # another page follows the last row (older); read with `before`: precedes the first (newer)
    as_of: AsOf


class LogEntry(msgspec.Struct):
    row: logs.LogRow
    bodies: logs.Bodies | None
    as_of: AsOf
    bodies_kept: bool  # this server keeps bodies (MESH_LOG_BODIES=on): without, `bodies` is always None


class LogService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        exports: ExportGate,
        database_url: str,
        export_idle_seconds: float,
        keeps_bodies: bool = False,
        waiter: ReadModelWaiter | None = None,
    ):
        self.pool = pool
        self.waiter = waiter  # a live page waits for the logs to show an event it heard of (GET /api/events)
        self.exports = exports  # the log exports running, one per account
        self.database_url = database_url  # an export reads on a connection of its own
        self.export_idle_seconds = export_idle_seconds  # how long an export's write may wait for its client
        self.keeps_bodies = keeps_bodies  # MESH_LOG_BODIES=on

    async def caught_up(self, position: int) -> None:
        """Wait (briefly) until the logs show the event at `position`."""
        if self.waiter is not None:
            await self.waiter.caught_up(LOGS, position)

    async def page(
        self,
        f: logs.LogFilter,
        limit: int,
        after: tuple[datetime, UUID] | None = None,
        before: tuple[datetime, UUID] | None = None,
    ) -> LogPage:
        """Newest first, `limit` rows after the cursor position `after` ((time, trace_id) or None), that is older;
        or with `before`, the `limit` rows nearest before it (newer): the page before the one that starts there."""
        async with self.pool.connection() as conn:
            async with conn.transaction():  # entries and position from one snapshot
                await conn.execute("set transaction isolation level repeatable read")
                rows = await logs.page(conn, f, limit + 1, after, before)
                as_of = await read_as_of(conn, LOGS)
        kept = rows[len(rows) - limit :] if before is not None and len(rows) > limit else rows[:limit]
        return LogPage(kept, len(rows) > limit, as_of)

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
                as_of = await read_as_of(conn, LOGS)
        return LogEntry(row, bodies, as_of, self.keeps_bodies) if row is not None else None

    async def export(self, account_id: UUID, f: logs.LogFilter, format: str) -> LogExport:
        """Every matching entry, newest first, as CSV or JSON lines (`format`), and the position they are as of,
        from one snapshot; Busy while the account has an export running (api/exports.py). The rows stream from a
        server-side cursor (constant memory at millions of rows) on a connection of the export's own, not the
        pool's; it and the account's slot are held until the body is sent in full or closed."""
        if format not in EXPORT_FORMATS:
            raise Invalid(f"format is csv or jsonl; got {format[:20]!r}", "invalid_request", param="format")
        stream = self._snapshot_rows(account_id, f)
        as_of = cast(AsOf, await anext(stream))  # the first item; every later one is a LogRow
        rows = cast(AsyncGenerator[logs.LogRow, None], stream)
        return LogExport(as_of, format, export_lines(rows, format), self.export_idle_seconds)

    async def _snapshot_rows(self, account_id: UUID, f: logs.LogFilter) -> AsyncGenerator[AsOf | logs.LogRow, None]:
        with self.exports.hold(account_id):
            conn = await psycopg.AsyncConnection.connect(self.database_url, connect_timeout=CONNECT_SECONDS)
            async with conn:
                async with conn.transaction():
                    await conn.execute("set transaction isolation level repeatable read, read only")
                    yield await read_as_of(conn, LOGS)
                    async for row in logs.every(conn, f):
                        yield row
