"""Logs: the account's requests, filtered as the JSON API filters them (api/log_filter.py), and one request."""

from __future__ import annotations

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
from api.dashboard.time_ranges import LOG_DEFAULT, LOG_PRESETS, RANGES, day_start
from api.errors import ApiError
from api.log_filter import check_filter, decode_cursor, encode_cursor, parse_filter, read_filters
from api.services.keys import KeyService
from api.services.logs import LogService
from api.services.models import ModelService
from projections import logs

LOG_PAGE = 50
FILTERS = ("model", "provider", "status", "key_id", "min_latency_ms")  # the API's filters, by their query names
RANGE_PARAMS = ("range", "from", "to")


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
    ) -> Response:
        """The range is a preset or whole days (the `to` day included); the other filters are the API's, each kept
        when the range changes. `trace`: a trace id to open (a request of this account's)."""
        query = request.query_params
        if trace:
            return await self._find(request, account_id, log_service, trace.strip())
        preset = query.get("range") or LOG_DEFAULT
        start, end = _day(query, "from"), _day(query, "to", after=True)
        if start or end:
            preset = "custom"
        elif preset in LOG_PRESETS:
            start = datetime.now(timezone.utc) - RANGES[preset]
        chosen = parse_filter(start=start, end=end, **read_filters(query, *FILTERS))
        f = check_filter(msgspec.structs.replace(chosen, account_id=account_id))
        cursor = query.get("cursor") or None
        result = await log_service.page(f, LOG_PAGE, decode_cursor(cursor))
        refused = await log_service.refusals(f) if f.status != "success" and not cursor else {}
        kept = {name: query[name] for name in FILTERS if query.get(name)}  # what a range change keeps
        here = {**kept, **{name: query[name] for name in RANGE_PARAMS if query.get(name)}}
        keys = await key_service.rows(account_id)
        labels = {str(k.key_id): k.label for k in keys}
        return page(
            "logs.html",
            request,
            section="logs",
            rows=result.rows,
            refused=sorted(refused.items(), key=lambda item: -item[1]),
            as_of=result.as_of,
            older="/logs?" + urlencode({**here, "cursor": encode_cursor(result.rows[-1])}) if result.more else None,
            newest="/logs?" + urlencode(here) if cursor else None,
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
        return page("log.html", request, section="logs", entry=found.row, bodies=found.bodies, as_of=found.as_of)


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
