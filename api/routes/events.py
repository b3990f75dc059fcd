"""The event log as Server-Sent Events: the calling account's events (`/api/events`), every account's for the
operator (`/admin/events`).

Each event is one SSE message: `id:` its stream position, `event:` its registered name, `data:` the PublicEvent as
JSON. A client that reconnects with `Last-Event-ID` (browsers' EventSource does) resumes after that position. A
comment line (`: heartbeat`) goes out after MESH_EVENTS_HEARTBEAT_SECONDS without an event. The stream ends when
the client leaves, or when one write waits MESH_EXPORT_IDLE_SECONDS for it to read (api/exports.py).
"""

from __future__ import annotations

from typing import Annotated, AsyncIterator
from uuid import UUID

import msgspec
from litestar import Request, get
from litestar.di import NamedDependency, Provide
from litestar.params import HeaderParameter, QueryParameter
from litestar.response.sse import ServerSentEventMessage

from api.auth import current_account, operator
from api.dashboard.session import SESSION_COOKIE
from api.errors import ApiError
from api.exports import IdleTimedStream
from api.openapi import ACCOUNT, OPERATOR, content, errors
from api.services.accounts import AccountService
from api.services.events import MAX_TYPES_LENGTH, EventService, PublicEvent

SSE_MEDIA_TYPE = "text/event-stream"
HEARTBEAT = ServerSentEventMessage(data=None, comment="heartbeat").encode()

From = Annotated[
    int | None,
    QueryParameter(
        name="from", ge=0, description="the first stream position to send (default: the next event appended)"
    ),
]
Types = Annotated[
    str | None,
    QueryParameter(
        name="types", max_length=MAX_TYPES_LENGTH, description="comma-separated event names: only these events"
    ),
]
# A live dashboard part reloads with the position of the event it heard of: the page waits for its read model.
SeenPosition = Annotated[
    int | None,
    QueryParameter(name="position", ge=0, description="answer once the read model shows this stream position"),
]
LastEventId = Annotated[
    str | None,
    HeaderParameter(name="Last-Event-ID", max_length=32, description="resume after this position (SSE reconnect)"),
]


async def subscriber(request: Request, account_service: NamedDependency[AccountService]) -> UUID:
    """The account of the management token, or of the dashboard's session cookie (a browser's EventSource sends
    no Authorization header)."""
    if "authorization" in request.headers:
        return await current_account(request, account_service)
    token = request.cookies.get(SESSION_COOKIE)
    account_id = await account_service.account_for(token) if token else None
    if account_id is None:
        raise ApiError(401, "missing credentials: send 'Authorization: Bearer <management token>'", "unauthorized")
    return account_id


def _sse(events: AsyncIterator[PublicEvent | None]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        try:
            yield HEARTBEAT  # the answer starts at once: the client knows it is subscribed
            async for event in events:
                if event is None:
                    yield HEARTBEAT
                else:
                    yield ServerSentEventMessage(
                        data=msgspec.json.encode(event).decode(), event=event.name, id=event.position
                    ).encode()
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return frames()


async def _stream(
    event_service: EventService,
    idle_seconds: float,
    account_id: UUID | None,
    start: int | None,
    types: str | None,
    last_event_id: str | None,
) -> IdleTimedStream:
    wanted = event_service.event_types(types, operator=account_id is None)
    first = await event_service.start_of(start, last_event_id)
    event_service.check_open(account_id)
    return IdleTimedStream(
        _sse(event_service.events(account_id, first, wanted)),
        idle_seconds=idle_seconds,
        media_type=SSE_MEDIA_TYPE,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@get(
    "/api/events",
    security=ACCOUNT,
    dependencies={"account_id": Provide(subscriber)},
    responses=errors(400, 429),
    opt=content([SSE_MEDIA_TYPE]),
)
async def account_events(
    event_service: NamedDependency[EventService],
    account_id: NamedDependency[UUID],
    events_idle_seconds: NamedDependency[float],
    start: From = None,
    types: Types = None,
    last_event_id: LastEventId = None,
) -> IdleTimedStream:
    """This account's events as Server-Sent Events (`id:` position, `event:` name, `data:` the event without
    secrets' hashes), from `from` or after `Last-Event-ID`, followed live; `types` keeps only the events named.
    Budget-lease bookkeeping is left out. 429 `too_many_streams` past 5 open streams per account."""
    return await _stream(event_service, events_idle_seconds, account_id, start, types, last_event_id)


@get(
    "/admin/events",
    security=OPERATOR,
    dependencies={"_operator": Provide(operator)},
    responses=errors(400, 429),
    opt=content([SSE_MEDIA_TYPE]),
)
async def admin_events(
    event_service: NamedDependency[EventService],
    _operator: NamedDependency[str],
    events_idle_seconds: NamedDependency[float],
    start: From = None,
    types: Types = None,
    last_event_id: LastEventId = None,
) -> IdleTimedStream:
    """Every account's events (and the operator's: models, invites), as `/api/events` sends them."""
    return await _stream(event_service, events_idle_seconds, None, start, types, last_event_id)
