"""Request logs: the calling account's (management token) and every account's (an operator)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from api.openapi import ACCOUNT, OPERATOR, content, errors
from api.auth import current_account, operator
from api.errors import ApiError
from api.exports import EXPORT_HEADERS, IdleTimedStream
from api.log_entries import EXPORT_FORMATS, LogEntryOut, entry_out
from api.log_filter import MAX_CURSOR_LENGTH, check_filter, decode_cursor, encode_cursor, parse_filter
from api.services.as_of import AsOf
from api.services.logs import LogEntry, LogService
from api.services.support import SupportService
from projections import logs

DEFAULT_PAGE = 50


class LogPageOut(msgspec.Struct):
    data: list[LogEntryOut]
    next_cursor: str | None
    as_of: AsOf


class LogEntryDetailOut(LogEntryOut, kw_only=True):
    as_of: AsOf
    request: str | None = None  # the bodies, when MESH_LOG_BODIES=on (kept for MESH_LOG_RETENTION_DAYS)
    response: str | None = None
    bodies_truncated: bool = False


ExportFormat = Literal[tuple(EXPORT_FORMATS)]  # type: ignore[valid-type]


Limit = Annotated[int, QueryParameter(name="limit", ge=1, le=logs.MAX_PAGE, description="entries per page")]
Cursor = Annotated[
    str | None, QueryParameter(name="cursor", max_length=MAX_CURSOR_LENGTH, description="next_cursor of a page")
]


async def _page(
    log_service: LogService, f: logs.LogFilter, account_id: UUID | None, limit: int, cursor: str | None, admin: bool
) -> LogPageOut:
    f, after = check_filter(msgspec.structs.replace(f, account_id=account_id)), decode_cursor(cursor)
    page = await log_service.page(f, limit, after)
    return LogPageOut(
        [entry_out(r, admin) for r in page.rows], encode_cursor(page.rows[-1]) if page.more else None, page.as_of
    )


class LogController(Controller):
    path = "/api/logs"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account), "log_filter": Provide(parse_filter, sync_to_thread=False)}

    @get("/", responses=errors(400))
    async def list_logs(
        self,
        log_service: NamedDependency[LogService],
        account_id: NamedDependency[UUID],
        log_filter: NamedDependency[logs.LogFilter],
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> LogPageOut:
        """Requests of this account, newest first; filters: from, to (ISO 8601, [from, to)), model, provider,
        key_id, status (success | error), min_latency_ms; limit (1-500, default 50); cursor (next_cursor)."""
        return await _page(log_service, log_filter, account_id, limit, cursor, admin=False)

    @get("/export", responses=errors(400, 429), opt=content(EXPORT_FORMATS.values(), EXPORT_HEADERS))
    async def export(
        self,
        log_service: NamedDependency[LogService],
        account_id: NamedDependency[UUID],
        log_filter: NamedDependency[logs.LogFilter],
        format: FromQuery[ExportFormat] = "jsonl",
    ) -> IdleTimedStream:
        """Every entry matching the filters, streamed as CSV or JSON lines (`format=csv|jsonl`); one export at a
        time per account (429 `export_in_progress`); ended when the client reads nothing for
        MESH_EXPORT_IDLE_SECONDS."""
        f = check_filter(msgspec.structs.replace(log_filter, account_id=account_id))
        return (await log_service.export(account_id, f, format)).response()

    @get("/{trace_id:uuid}", responses=errors(404))
    async def get_entry(
        self, log_service: NamedDependency[LogService], account_id: NamedDependency[UUID], trace_id: FromPath[UUID]
    ) -> LogEntryDetailOut:
        found = await log_service.entry(account_id, trace_id)
        if found is None:
            raise ApiError(404, f"no request {trace_id} in this account's logs", "not_found")
        return detail_out(found)


class AdminLogEntryDetailOut(LogEntryDetailOut, kw_only=True):
    account_id: UUID
    account_email: str | None  # the account's, to find it in the operator's pages


def _bodies(found: LogEntry) -> dict:
    bodies = found.bodies
    return dict(
        as_of=found.as_of,
        request=bodies.request if bodies else None,
        response=bodies.response if bodies else None,
        bodies_truncated=bodies.truncated if bodies else False,
    )


def detail_out(found: LogEntry) -> LogEntryDetailOut:
    return LogEntryDetailOut(**msgspec.structs.asdict(entry_out(found.row)), **_bodies(found))


class AdminLogController(Controller):
    path = "/admin/logs"
    security = OPERATOR
    dependencies = {"_operator": Provide(operator), "log_filter": Provide(parse_filter, sync_to_thread=False)}

    @get("/", responses=errors(400, 503))
    async def list_logs(
        self,
        log_service: NamedDependency[LogService],
        _operator: NamedDependency[str],
        log_filter: NamedDependency[logs.LogFilter],
        account_id: Annotated[UUID | None, QueryParameter(name="account_id", description="one account's")] = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> LogPageOut:
        """Requests of every account, newest first: the account's filters plus account_id."""
        return await _page(log_service, log_filter, account_id, limit, cursor, admin=True)

    @get("/{trace_id:uuid}", responses=errors(404))
    async def get_entry(
        self,
        support_service: NamedDependency[SupportService],
        _operator: NamedDependency[str],
        trace_id: FromPath[UUID],
    ) -> AdminLogEntryDetailOut:
        """One request of any account by its trace id (what a customer reads out to support), with the account."""
        found = await support_service.trace(trace_id)
        return AdminLogEntryDetailOut(
            **msgspec.structs.asdict(entry_out(found.entry.row, admin=True)),
            **_bodies(found.entry),
            account_email=found.account.email if found.account else None,
        )
