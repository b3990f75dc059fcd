"""Logs: the account's requests, filtered as the JSON API filters them (api/log_filter.py), and one request."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Template

from api.dashboard.rendering import SessionPages, page
from api.dashboard.time_ranges import LOG_DEFAULT, LOG_PRESETS, RANGES, day_start
from api.errors import ApiError
from api.log_filter import check_filter, decode_cursor, encode_cursor, parse_filter, read_filters
from api.services.logs import LogService
from api.services.models import ModelService
from projections import logs

LOG_PAGE = 50


class LogPages(SessionPages):
    @get("/logs")
    async def logs(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        log_service: NamedDependency[LogService],
        model_service: NamedDependency[ModelService],
    ) -> Template:
        """The range is a preset or whole days (the `to` day included); the other filters are the API's."""
        query = request.query_params
        preset = query.get("range") or LOG_DEFAULT
        start, end = _day(query, "from"), _day(query, "to", after=True)
        if start or end:
            preset = "custom"
        elif preset in LOG_PRESETS:
            start = datetime.now(timezone.utc) - RANGES[preset]
        chosen = parse_filter(start=start, end=end, **read_filters(query, "model", "status", "key_id"))
        f = check_filter(msgspec.structs.replace(chosen, account_id=account_id))
        result = await log_service.page(f, LOG_PAGE, decode_cursor(query.get("cursor") or None))
        following = None
        if result.more:
            params = {k: v for k, v in query.items() if k != "cursor"}
            params["cursor"] = encode_cursor(result.rows[-1])
            following = "/logs?" + urlencode(params)
        return page(
            "logs.html",
            request,
            section="logs",
            rows=result.rows,
            as_of=result.as_of,
            following=following,
            preset=preset,
            ranges=LOG_PRESETS,
            query=query,
            models=model_service.enabled(),
            statuses=logs.STATUSES,
        )

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


def _day(query, param: str, after: bool = False) -> datetime | None:
    """The start of the day in `param` (of the day after, for the last day of a range), or None without one."""
    value = query.get(param)
    if not value:
        return None
    try:
        return day_start(value) + timedelta(days=1) if after else day_start(value)
    except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
        raise ApiError(400, f"dates are YYYY-MM-DD; got {value!r}", "invalid_request", param=param) from None
