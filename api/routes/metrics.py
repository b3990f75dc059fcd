"""GET /metrics: this process's metrics in the Prometheus text format, for the operator token or
MESH_METRICS_TOKEN (a scraper's, which can read nothing else)."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.di import NamedDependency

from api.auth import bearer
from api.errors import ApiError
from api.openapi import errors
from api.services.metrics import CONTENT_TYPE, MetricsService


@get("/metrics", media_type=CONTENT_TYPE, responses=errors(401, 403))
async def metrics(request: Request, metrics_service: NamedDependency[MetricsService]) -> Response[bytes]:
    """Counters and histograms of the requests this process served and refused, tokens and spend by model,
    upstream errors, budget leases, the usage spool, read-model lag, and the process's own metrics."""
    if not metrics_service.may_read(bearer(request)):
        raise ApiError(403, "GET /metrics needs the operator token or MESH_METRICS_TOKEN", "forbidden")
    return Response(await metrics_service.render(), media_type=CONTENT_TYPE)
