"""GET /health: are NATS and PostgreSQL reachable, and how far behind is each projection."""

from __future__ import annotations

import msgspec
from litestar import Request, Response, get

from api.runtime import READ_MODELS, Runtime
from api.supervisor import ChildStatus
from projections.readmodel import position_of


class ProjectionHealth(msgspec.Struct):
    name: str
    position: int
    lag: int  # events behind the stream head


class HealthOut(msgspec.Struct):
    status: str  # "ok" | "degraded"
    nats: str
    postgres: str
    stream_head: int | None
    projections: list[ProjectionHealth]
    children: list[ChildStatus] = []  # the processes `mesh up` keeps running (none with external servers)


@get("/health")
async def health(request: Request) -> Response[HealthOut]:
    runtime: Runtime = request.app.state.runtime
    head: int | None = None
    nats_state = "ok"
    try:
        head = await runtime.source.head()
    except Exception as exc:
        nats_state = f"unreachable: {type(exc).__name__}"
    pg_state = "ok"
    projections = []
    try:
        async with runtime.pool.connection(timeout=2) as conn:
            for model in READ_MODELS:
                position, _ = await position_of(conn, model)
                projections.append(ProjectionHealth(model.name, position, max(0, (head or position) - position)))
    except Exception as exc:
        pg_state = f"unreachable: {type(exc).__name__}"
    children = runtime.supervisor.status()
    ok = nats_state == "ok" and pg_state == "ok" and all(child.state == "running" for child in children)
    body = HealthOut("ok" if ok else "degraded", nats_state, pg_state, head, projections, children)
    return Response(body, status_code=200 if ok else 503)
