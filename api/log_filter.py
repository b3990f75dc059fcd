"""What a page of request logs is asked for: the filters and the cursor, read one way for the API and the dashboard.

Each filter is declared once, below, as a query parameter. The JSON API reads (and documents) them through
`parse_filter`, a Litestar dependency; the dashboard's Logs page reads the same values from its form with
`read_filters`, which converts each by the same declaration. Both then go through `check_filter`, so a value the
API refuses is refused on the page too, in the same words.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_type_hints
from uuid import UUID

import msgspec
from litestar.params import QueryParameter

from api.errors import ApiError
from api.input_errors import query_error
from domain.bounds import MAX_MODEL_ID_LENGTH, MAX_REFERENCE_LENGTH, SINGLE_LINE, InvalidText, check_aware
from projections import logs

MAX_LATENCY_MS = 10**9  # a latency filter beyond any request's (about 11.6 days)
MAX_CURSOR_LENGTH = 200  # next_cursor is about 80 characters

Status = Literal[tuple(logs.STATUSES)]  # type: ignore[valid-type]

From = Annotated[datetime | None, QueryParameter(name="from", description="ISO 8601; the window is [from, to)")]
To = Annotated[datetime | None, QueryParameter(name="to", description="ISO 8601, later than from")]
Model = Annotated[str | None, QueryParameter(name="model", max_length=MAX_MODEL_ID_LENGTH, pattern=SINGLE_LINE)]
Provider = Annotated[str | None, QueryParameter(name="provider", max_length=MAX_REFERENCE_LENGTH, pattern=SINGLE_LINE)]
KeyId = Annotated[UUID | None, QueryParameter(name="key_id", description="an API key id")]
StatusFilter = Annotated[Status | None, QueryParameter(name="status")]
MinLatency = Annotated[
    int | None,
    QueryParameter(name="min_latency_ms", ge=0, le=MAX_LATENCY_MS, schema_extra={"minimum": 0}),  # 0 is dropped
]


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, message, "invalid_request", param=param)


def parse_filter(
    start: From = None,
    end: To = None,
    model: Model = None,
    provider: Provider = None,
    key_id: KeyId = None,
    status: StatusFilter = None,
    min_latency_ms: MinLatency = None,
) -> logs.LogFilter:
    """The filters shared by the list, the export and the operator's view (a dependency: Litestar reads and
    documents each query parameter from this signature, so the document states the bounds checked here). The
    rules between them are checked by `check_filter`, in the handler: after the caller's credentials."""
    return logs.LogFilter(
        start=start,
        end=end,
        model=model or None,
        provider=provider or None,
        key_id=key_id,
        status=status,
        min_latency_ms=min_latency_ms,
    )


def check_filter(f: logs.LogFilter) -> logs.LogFilter:
    """A 400 naming the parameter for a time outside the years allowed, or a window that ends before it starts."""
    for param, moment in (("from", f.start), ("to", f.end)):
        try:
            check_aware(moment, param)
        except InvalidText as exc:
            raise _bad(param, str(exc)) from None
    if f.start and f.end and f.start >= f.end:
        raise _bad("to", "to must be later than from (the window is [from, to))")
    return f


def _declared(argument: str) -> tuple[str, Any]:
    """A filter's query name and the type (with its bounds) its value is read as, from `parse_filter`'s signature:
    as the API's, so a refusal says the same."""
    declared, kwarg = get_args(get_type_hints(parse_filter, include_extras=True)[argument])
    base = Union[tuple(a for a in get_args(declared) if a is not type(None))]  # noqa: UP007 (built from a tuple)
    bounds = {k: getattr(kwarg, k) for k in ("ge", "le", "max_length", "pattern") if getattr(kwarg, k) is not None}
    return kwarg.name, (Annotated[base, msgspec.Meta(**bounds)] if bounds else base) | None


def read_filters(query: Mapping[str, str], *arguments: str) -> dict[str, Any]:
    """The `parse_filter` arguments named, from a page's query (an empty value is no filter), converted as the API
    converts them: a value it refuses is an InvalidInput naming the parameter, in the API's words."""
    values: dict[str, Any] = {}
    for argument in arguments:
        name, kind = _declared(argument)
        raw = query.get(name) or None
        try:
            values[argument] = None if raw is None else msgspec.convert(raw, kind, strict=False)
        except msgspec.ValidationError as exc:
            raise query_error(name, str(exc), kind, raw) from None
    return values


def encode_cursor(row: logs.LogRow) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode((row.time, row.trace_id))).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> tuple[datetime, UUID] | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment, trace_id = msgspec.json.decode(raw, type=tuple[datetime, UUID])
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise _bad(
            "cursor", "cursor is not one this API gave out; pass next_cursor from the previous page as is"
        ) from None
    return moment, trace_id
