"""GET /health: are NATS and PostgreSQL reachable, how far behind is each projection, and has any set an event
aside (quarantined: `degraded`, answered with 200 since the service still works; a person should look).

Anyone gets the status alone (and its HTTP status, what healthchecks read); the details (process ids, a
quarantined event's error, which can quote values from it) only with `Authorization: Bearer <operator token>`."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get

from api.auth import operator
from api.runtime import READ_MODELS, Runtime
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


class PublicHealthOut(msgspec.Struct):
    status: str  # "ok" | "degraded"


@get("/health")
async def health(request: Request) -> Response[HealthOut | PublicHealthOut]:
    """The status; with the operator token, the details. A wrong token is refused (403), never ignored."""
    detailed = "authorization" in request.headers
    if detailed:
        await operator(request)
    runtime: Runtime = request.app.state.runtime
    head: int | None = None
    nats_state = "ok"
    try:
        head = await runtime.source.head()
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
    status = "ok" if reachable and not set_aside else "degraded"  # set-aside events: the service still works
    body = HealthOut(status, nats_state, pg_state, head, projections, children, set_aside)
    return Response(body if detailed else PublicHealthOut(status), status_code=200 if reachable else 503)
