"""GET /health: are NATS and PostgreSQL reachable, how far behind is each projection, and has any set an event
aside (quarantined: `degraded`, answered with 200 since the service still works; a person should look). Also
`degraded` (200) with a warning when the event log is near its size limit (MESH_STREAM_MAX_BYTES): full, it
refuses every new event.

Anyone gets the status alone (and its HTTP status, what healthchecks read); the details (process ids, a
quarantined event's error, which can quote values from it) only with `Authorization: Bearer <operator token>`."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from api.auth import operator
from api.openapi import errors
from api.runtime import READ_MODELS, Runtime
from commands.stream import STREAM_FULL_WARNING
from projections.quarantine import quarantined
from api.supervisor import ChildStatus
from projections.readmodel import position_of


class ProjectionHealth(msgspec.Struct):
    name: str
    position: int
    lag: int  # events behind the stream head


class QuarantineHealth(msgspec.Struct):
    projection: str
    position: int  # the stream position of the event set aside
    event: str
    error: str


class HealthOut(msgspec.Struct):
    status: str  # "ok" | "degraded"
    nats: str
    postgres: str
    stream_head: int | None
    projections: list[ProjectionHealth]
    children: list[ChildStatus] = []  # the processes `mesh up` keeps running (none with external servers)
    quarantined: list[QuarantineHealth] = []  # events a projection could not apply: `mesh projections retry`
    stream_bytes: int | None = None  # what the event log holds
    stream_max_bytes: int | None = None  # its limit (MESH_STREAM_MAX_BYTES)
    warnings: list[str] = []  # what a person should look at before it stops the service


def stream_warnings(used: int, limit: int) -> list[str]:
    if limit <= 0 or used < STREAM_FULL_WARNING * limit:
        return []
    return [
        f"the event log holds {used} of its {limit} bytes ({used / limit:.0%}); when full, every change and "
        "request is refused: raise MESH_STREAM_MAX_BYTES (and give NATS the disk) soon"
    ]


class PublicHealthOut(msgspec.Struct):
    status: str  # "ok" | "degraded"


@get(
    "/health",
    responses={
        503: ResponseSpec(HealthOut, description="NATS, PostgreSQL or a child process is not reachable"),
        **errors(403),
    },
)
async def health(request: Request) -> Response[HealthOut | PublicHealthOut]:
    """The status; with the operator token, the details. A wrong token is refused (403), never ignored."""
    detailed = "authorization" in request.headers
    if detailed:
        await operator(request)
    runtime: Runtime = request.app.state.runtime
    head: int | None = None
    used: int | None = None
    limit: int | None = None
    nats_state = "ok"
    try:
        head, used, limit = await runtime.source.state()
    except Exception as exc:
        nats_state = f"unreachable: {type(exc).__name__}"
    pg_state = "ok"
    projections = []
    set_aside: list[QuarantineHealth] = []
    try:
        async with runtime.pool.connection(timeout=2) as conn:
            for model in READ_MODELS:
                position, _ = await position_of(conn, model)
                projections.append(ProjectionHealth(model.name, position, max(0, (head or position) - position)))
            set_aside = [
                QuarantineHealth(q.read_model, q.position, q.event_name, q.error) for q in await quarantined(conn)
            ]
    except Exception as exc:
        pg_state = f"unreachable: {type(exc).__name__}"
    children = runtime.supervisor.status()
    reachable = nats_state == "ok" and pg_state == "ok" and all(child.state == "running" for child in children)
    warnings = stream_warnings(used, limit) if used is not None and limit is not None else []
    # set-aside events, a log near full: the service still works
    status = "ok" if reachable and not set_aside and not warnings else "degraded"
    body = HealthOut(status, nats_state, pg_state, head, projections, children, set_aside, used, limit, warnings)
    return Response(body if detailed else PublicHealthOut(status), status_code=200 if reachable else 503)
