"""GET /health: are NATS and PostgreSQL reachable, how far behind is each projection, and has any set an event
aside (quarantined: `degraded`, answered with 200 since the service still works; a person should look). Also
`degraded` (200) with a warning when the event log is near its size limit (MESH_STREAM_MAX_BYTES): full, it
refuses every new event.

Anyone gets the status alone (and its HTTP status, what healthchecks read); the details (process ids, a
quarantined event's error, which can quote values from it) only with `Authorization: Bearer <operator token>`."""

from __future__ import annotations

import msgspec
from litestar.di import NamedDependency
from litestar import Request, Response, get
from litestar.openapi.datastructures import ResponseSpec

from api.auth import operator
from api.openapi import errors
from api.services.health import HealthService
from api.services.operators import OperatorService
from api.supervisor import ChildStatus


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


class PublicHealthOut(msgspec.Struct):
    status: str  # "ok" | "degraded"


@get(
    "/health",
    responses={
        503: ResponseSpec(HealthOut, description="NATS, PostgreSQL or a child process is not reachable"),
        **errors(403),
    },
)
async def health(
    request: Request, health_service: NamedDependency[HealthService], operator_service: NamedDependency[OperatorService]
) -> Response[HealthOut | PublicHealthOut]:
    """The status; with the operator token, the details. A wrong token is refused (403), never ignored."""
    detailed = "authorization" in request.headers
    if detailed:
        await operator(request, operator_service)
    report = await health_service.check()
    body = HealthOut(
        report.status,
        report.nats,
        report.postgres,
        report.stream_head,
        [ProjectionHealth(p.name, p.position, p.lag) for p in report.projections],
        report.children,
        [QuarantineHealth(q.read_model, q.position, q.event_name, q.error) for q in report.quarantined],
        report.stream_bytes,
        report.stream_max_bytes,
        report.warnings,
    )
    return Response(body if detailed else PublicHealthOut(report.status), status_code=200 if report.reachable else 503)
