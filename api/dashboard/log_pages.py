"""Logs: the account's requests, filtered as the JSON API filters them (api/log_filter.py), paged newer and older
by keyset cursors, exported as the JSON API exports them, and one request with its bodies."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.dashboard.rendering import SessionPages, page
from api.dashboard.session import renewed_cookie
from api.dashboard.time_ranges import LOG_DEFAULT, LOG_PRESETS, RANGES, day_start
from api.errors import ApiError
from api.exports import IdleTimedStream
from api.log_filter import MAX_CURSOR_LENGTH, check_filter, decode_cursor, encode_cursor, parse_filter, read_filters
from api.routes.events import SeenPosition
from api.services.keys import KeyService
from api.services.logs import LogService
from api.services.models import ModelService
from domain.usage import MAX_LOGGED_BODY
from projections import logs

LOG_PAGE = 50
FILTERS = ("model", "provider", "status", "key_id", "min_latency_ms")  # the API's filters, by their query names
RANGE_PARAMS = ("range", "from", "to")
CURSORS = {"cursor": "older", "before": "newer"}  # a page's position: the requests older, or newer, than one


class LogPages(SessionPages):
    @get("/logs")
    async def logs(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        log_service: NamedDependency[LogService],
        model_service: NamedDependency[ModelService],
        key_service: NamedDependency[KeyService],
        trace: FromQuery[str | None] = None,
        position: SeenPosition = None,
    ) -> Response:
        """The filters and range of `_chosen`, each kept when the range changes; `cursor` (Older) or `before`
        (Newer): a keyset position, so no row is skipped or shown twice between pages while requests arrive.
        `trace`: a trace id to open (a request of this account's)."""
        query = request.query_params
        if trace:
            return await self._find(request, account_id, log_service, trace.strip())
        f, preset = _chosen(query, account_id)
        after, before = _cursor(query, "cursor"), _cursor(query, "before")
        if after and before:
            raise ApiError(
                400,
                "a page of requests starts at one place: older than one request (cursor) or newer (before), not both",
                "invalid_request",
                param="before",
            )
        if position is not None:  # a live reload (dashboard.js) for an event it heard of
            await log_service.caught_up(position)
        result = await log_service.page(f, LOG_PAGE, after, before)
        rows, paged = result.rows, bool(after or before)
        refused = await log_service.refusals(f) if f.status != "success" and not paged else {}
        kept = {name: query[name] for name in FILTERS if query.get(name)}  # what a range change keeps
        here = {**kept, **{name: query[name] for name in RANGE_PARAMS if query.get(name)}}
        # the page read from `before` was reached from the one after it (older); one read from `cursor`, from
        # the one before it (newer)
        older = bool(rows) and (result.more if before is None else True)
        newer = bool(rows) and (result.more if before is not None else after is not None)
        keys = await key_service.rows(account_id)
        labels = {str(k.key_id): k.label for k in keys}
        return page(
            "logs.html",
            request,
            section="logs",
            rows=rows,
            refused=sorted(refused.items(), key=lambda item: -item[1]),
            as_of=result.as_of,
            older="/logs?" + urlencode({**here, "cursor": encode_cursor(rows[-1])}) if older else None,
            newer="/logs?" + urlencode({**here, "before": encode_cursor(rows[0])}) if newer else None,
            newest="/logs?" + urlencode(here) if paged else None,
            live=not paged,  # the newest page follows the account's requests (dashboard.js)
            exports={name: "/logs/export?" + urlencode({**here, "format": name}) for name in ("csv", "jsonl")},
            range_links={name: "/logs?" + urlencode({**kept, "range": name}) for name in LOG_PRESETS},
            active=[
                (name, labels.get(value, value), "/logs?" + urlencode(_without(here, name)))
                for name, value in kept.items()
            ],
            clear="/logs?" + urlencode({name: here[name] for name in RANGE_PARAMS if name in here}),
            preset=preset,
            query=query,
            models=model_service.enabled(),
            providers=sorted({m.provider for m in model_service.enabled()}),
            keys=keys,
            statuses=logs.STATUSES,
        )

    @get("/logs/export")
    async def export(
        self, request: Request, account_id: NamedDependency[UUID], log_service: NamedDependency[LogService]
    ) -> IdleTimedStream:
        """Every request the Logs page with this query lists (its filters and range, every page), as the JSON
        API's export: `format=csv|jsonl`, one export at a time per account, the same limits."""
        f, _ = _chosen(request.query_params, account_id)
        export = await log_service.export(account_id, f, request.query_params.get("format") or "csv")
        return export.response(cookies=renewed_cookie(request))

    async def _find(self, request: Request, account_id: UUID, log_service: LogService, trace: str) -> Response:
        """A trace id found among this account's requests opens its page; anything else is a page that says why."""
        try:
            trace_id = UUID(trace)
        except ValueError:
            raise ApiError(
                400,
                f"a trace id is a UUID such as 019a8e4c-5b7d-7c3e-8f00-1a2b3c4d5e6f (the x-mesh-trace-id header); got "
                f"{trace[:80]!r}",
                "invalid_request",
                param="trace",
            ) from None
        if await log_service.entry(account_id, trace_id) is None:
            raise ApiError(404, f"no request {trace_id} in this account's logs", "not_found", param="trace")
        return Redirect(f"/logs/{trace_id}", status_code=HTTP_303_SEE_OTHER)

    @get("/logs/{trace_id:uuid}")
    async def log_entry(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        trace_id: FromPath[UUID],
        log_service: NamedDependency[LogService],
    ) -> Template:
        found = await log_service.entry(account_id, trace_id)
        if found is None:
            raise ApiError(404, f"no request {trace_id} in this account's logs", "not_found")
        bodies = found.bodies
        return page(
            "log.html",
            request,
            section="logs",
            entry=found.row,
            bodies=bodies,
            request_body=_readable(bodies.request) if bodies else None,
            response_body=_readable(bodies.response) if bodies and bodies.response is not None else None,
            bodies_kept=found.bodies_kept,
            body_limit_kib=MAX_LOGGED_BODY // 1024,
            as_of=found.as_of,
        )


def _chosen(query, account_id: UUID) -> tuple[logs.LogFilter, str]:
    """The filters and the range a Logs query names, and the preset ("custom" for days), read one way for the
    page and its export. The range is a preset or whole days (the `to` day included); the other filters are
    the API's."""
    preset = query.get("range") or LOG_DEFAULT
    start, end = _day(query, "from"), _day(query, "to", after=True)
    if start or end:
        preset = "custom"
    elif preset in LOG_PRESETS:
        start = datetime.now(timezone.utc) - RANGES[preset]
    chosen = parse_filter(start=start, end=end, **read_filters(query, *FILTERS))
    return check_filter(msgspec.structs.replace(chosen, account_id=account_id)), preset


def _cursor(query, param: str) -> tuple[datetime, UUID] | None:
    """A page's position from the link that led to it; a damaged link is a 400 saying so."""
    value = query.get(param) or None
    if value is None:
        return None
    if len(value) <= MAX_CURSOR_LENGTH:
        try:
            return decode_cursor(value)
        except ApiError:
            pass
    raise ApiError(
        400,
        f"this link to the {CURSORS[param]} requests is damaged: its {param} is not one this page made. Open Logs "
        "again to start from the newest requests.",
        "invalid_request",
        param=param,
    )


def _readable(body: str) -> str:
    """A body as sent, or indented when it is JSON (a body cut at the size limit, or a stream, is shown as is)."""
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False)
    except ValueError:
        return body


def _without(params: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in params.items() if k != name}


def _day(query, param: str, after: bool = False) -> datetime | None:
    """The start of the day in `param` (of the day after, for the last day of a range), or None without one."""
    value = query.get(param)
    if not value:
        return None
    try:
        return day_start(value) + timedelta(days=1) if after else day_start(value)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise ApiError(400, f"dates are YYYY-MM-DD; got {value!r}", "invalid_request", param=param) from None
