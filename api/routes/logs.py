"""Request logs: the calling account's (management token) and every account's (operator token)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from contextlib import aclosing
from typing import Annotated, AsyncGenerator, AsyncIterator, Literal
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, QueryParameter

from api.openapi import ACCOUNT, OPERATOR, content, errors
from api.auth import current_account, operator
from api.errors import ApiError
from api.exports import IdleTimedStream
from api.log_filter import MAX_CURSOR_LENGTH, check_filter, decode_cursor, encode_cursor, parse_filter
from api.services.as_of import AsOf
from api.services.logs import LogService
from domain.money import pico_to_usd
from projections import logs

DEFAULT_PAGE = 50
EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
EXPORT_CHUNK = 500  # rows per write of an export
EXPORT_HEADERS = {  # what the export's answer carries beside its body
    "x-mesh-as-of-position": "the stream position the export reflects",
    "x-mesh-as-of-time": "the time of that event (ISO 8601), empty before the first",
    "content-disposition": "attachment; filename=mesh-logs.csv or .jsonl",
}


class LatencyOut(msgspec.Struct):
    total: float  # milliseconds
    upstream: float
    first_token: float | None


class TemplateRefOut(msgspec.Struct):
    id: UUID
    version: int | None


class LogEntryOut(msgspec.Struct):
    trace_id: UUID
    time: datetime
    key_id: UUID
    key_label: str | None
    model: str
    requested_model: str | None
    provider: str
    status: str  # success | error
    http_status: int
    error: str | None
    stream: bool
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: str
    latency_ms: LatencyOut
    estimated: bool
    template: TemplateRefOut | None


class AdminLogEntryOut(LogEntryOut, kw_only=True):
    account_id: UUID


class LogPageOut(msgspec.Struct):
    data: list[LogEntryOut]
    next_cursor: str | None
    as_of: AsOf


class LogEntryDetailOut(LogEntryOut, kw_only=True):
    as_of: AsOf
    request: str | None = None  # the bodies, when MESH_LOG_BODIES=on (kept for MESH_LOG_RETENTION_DAYS)
    response: str | None = None
    bodies_truncated: bool = False


def _ms(us: int | None) -> float | None:
    return round(us / 1000, 3) if us is not None else None


def entry_out(row: logs.LogRow, admin: bool = False) -> LogEntryOut:
    fields = dict(
        trace_id=row.trace_id,
        time=row.time,
        key_id=row.key_id,
        key_label=row.key_label,
        model=row.model,
        requested_model=row.requested_model,
        provider=row.provider,
        status="success" if row.status == "ok" else "error",
        http_status=row.http_status,
        error=row.error,
        stream=row.stream,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cached_prompt_tokens=row.cached_prompt_tokens,
        cache_write_tokens=row.cache_write_tokens,
        reasoning_tokens=row.reasoning_tokens,
        cost_usd=pico_to_usd(row.cost),
        latency_ms=LatencyOut(_ms(row.latency_us), _ms(row.upstream_us), _ms(row.first_token_us)),
        estimated=row.estimated,
        template=TemplateRefOut(row.template_id, row.template_version) if row.template_id is not None else None,
    )
    return AdminLogEntryOut(**fields, account_id=row.account_id) if admin else LogEntryOut(**fields)


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


_CSV_HEADER = [
    "trace_id",
    "time",
    "key_id",
    "key_label",
    "model",
    "requested_model",
    "provider",
    "status",
    "http_status",
    "error",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_total_ms",
    "latency_upstream_ms",
    "latency_first_token_ms",
    "estimated",
    "template_id",
    "template_version",
]


def _csv_line(e: LogEntryOut) -> list:
    t = e.template
    return [
        e.trace_id,
        e.time.isoformat(),
        e.key_id,
        e.key_label,
        e.model,
        e.requested_model,
        e.provider,
        e.status,
        e.http_status,
        e.error,
        e.stream,
        e.prompt_tokens,
        e.completion_tokens,
        e.cached_prompt_tokens,
        e.cache_write_tokens,
        e.reasoning_tokens,
        e.cost_usd,
        e.latency_ms.total,
        e.latency_ms.upstream,
        e.latency_ms.first_token,
        e.estimated,
        t.id if t else None,
        t.version if t else None,
    ]


async def export_lines(rows: AsyncGenerator[logs.LogRow, None], format: str) -> AsyncIterator[bytes]:
    """The export's body: a CSV header or nothing, then one line per row, sent EXPORT_CHUNK lines at a time.
    Closing it closes `rows` (and what they hold)."""
    async with aclosing(rows):
        async for chunk in _lines(rows, format):
            yield chunk


async def _lines(rows: AsyncIterator[logs.LogRow], format: str) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if format == "csv":
        writer.writerow(_CSV_HEADER)
    chunk: list[bytes] = [buffer.getvalue().encode()] if format == "csv" else []
    encode = msgspec.json.Encoder().encode
    async for row in rows:
        entry = entry_out(row)
        if format == "csv":
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(["" if v is None else v for v in _csv_line(entry)])
            chunk.append(buffer.getvalue().encode())
        else:
            chunk.append(encode(entry) + b"\n")
        if len(chunk) >= EXPORT_CHUNK:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)


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
        as_of, rows = await log_service.export(account_id, f)
        headers = {
            "content-disposition": f'attachment; filename="mesh-logs.{format}"',
            "x-mesh-as-of-position": str(as_of.position),
            "x-mesh-as-of-time": as_of.time.isoformat() if as_of.time else "",
        }
        return IdleTimedStream(
            export_lines(rows, format),
            idle_seconds=log_service.export_idle_seconds,
            media_type=EXPORT_FORMATS[format],
            headers=headers,
        )

    @get("/{trace_id:uuid}", responses=errors(404))
    async def get_entry(
        self, log_service: NamedDependency[LogService], account_id: NamedDependency[UUID], trace_id: FromPath[UUID]
    ) -> LogEntryDetailOut:
        found = await log_service.entry(account_id, trace_id)
        if found is None:
            raise ApiError(404, f"no request {trace_id} in this account's logs", "not_found")
        bodies = found.bodies
        return LogEntryDetailOut(
            **msgspec.structs.asdict(entry_out(found.row)),
            as_of=found.as_of,
            request=bodies.request if bodies else None,
            response=bodies.response if bodies else None,
            bodies_truncated=bodies.truncated if bodies else False,
        )


class AdminLogController(Controller):
    path = "/admin/logs"
    security = OPERATOR
    dependencies = {"_operator": Provide(operator), "log_filter": Provide(parse_filter, sync_to_thread=False)}

    @get("/", responses=errors(400, 503))
    async def list_logs(
        self,
        log_service: NamedDependency[LogService],
        _operator: NamedDependency[None],
        log_filter: NamedDependency[logs.LogFilter],
        account_id: Annotated[UUID | None, QueryParameter(name="account_id", description="one account's")] = None,
        limit: Limit = DEFAULT_PAGE,
        cursor: Cursor = None,
    ) -> LogPageOut:
        """Requests of every account, newest first: the account's filters plus account_id."""
        return await _page(log_service, log_filter, account_id, limit, cursor, admin=True)
