"""A request log entry as Mesh hands it out: the API's JSON entry, and the export's lines (CSV or JSON lines),
one shape for the JSON API's list and export and the dashboard's export."""

from __future__ import annotations

import csv
import io
from contextlib import aclosing
from datetime import datetime
from typing import AsyncGenerator, AsyncIterator
from uuid import UUID

import msgspec

from api.spreadsheet_cells import cell
from domain.money import pico_to_usd
from projections import logs

EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
EXPORT_CHUNK = 500  # rows per write of an export
# MESH_EXPORT_IDLE_SECONDS: how long one write of an export or an event stream may wait for the client to read
EXPORT_IDLE_SECONDS = 30.0


class LatencyOut(msgspec.Struct):
    total: float  # milliseconds
    upstream: float
    first_token: float | None


class TemplateRefOut(msgspec.Struct):
    id: UUID
    version: int | None


class AttemptOut(msgspec.Struct):
    model: str
    status: int  # the HTTP status the call ended with (200: it answered)
    latency_ms: int


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
    api: str | None = None  # the front door: chat.completions | embeddings | responses | messages (null: not recorded)
    attempts: list[AttemptOut] = []  # every upstream call when there was more than one (retries, fallbacks)


class AdminLogEntryOut(LogEntryOut, kw_only=True):
    account_id: UUID


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
        api=row.api,
        attempts=[AttemptOut(a.model, a.status, a.latency_ms) for a in row.attempts],
    )
    return AdminLogEntryOut(**fields, account_id=row.account_id) if admin else LogEntryOut(**fields)


CSV_HEADER = [
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
    "api",
    "attempts",
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
        e.api,
        " ".join(f"{a.model}:{a.status}:{a.latency_ms}" for a in e.attempts) or None,
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
        writer.writerow(CSV_HEADER)
    chunk: list[bytes] = [buffer.getvalue().encode()] if format == "csv" else []
    encode = msgspec.json.Encoder().encode
    async for row in rows:
        entry = entry_out(row)
        if format == "csv":
            buffer.seek(0)
            buffer.truncate()
            writer.writerow([cell(v) for v in _csv_line(entry)])
            chunk.append(buffer.getvalue().encode())
        else:
            chunk.append(encode(entry) + b"\n")
        if len(chunk) >= EXPORT_CHUNK:
            yield b"".join(chunk)
            chunk = []
    if chunk:
        yield b"".join(chunk)
