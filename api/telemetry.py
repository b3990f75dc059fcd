"""Tracing on or off, from OpenTelemetry's own environment variables: on when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set (and `OTEL_SDK_DISABLED` is not true). The SDK reads the rest itself:
the exporter its endpoint, headers and timeout, the batch span processor its `OTEL_BSP_*`, the resource
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`. The SDK and the OTLP exporter are the optional extra
`mesh-gateway[otel]`."""

from __future__ import annotations

import os
from typing import Any, Mapping

from api.servers import MeshError

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
PROTOCOL = "http/protobuf"  # the one OTLP protocol Mesh exports with
DEFAULT_SERVICE_NAME = "mesh"  # service.name unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names one
TRACER_NAME = "mesh.gateway"


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def tracer_provider(environ: Mapping[str, str] = os.environ) -> Any | None:
    """The SDK's TracerProvider exporting over OTLP (http/protobuf) through a batch span processor, or None when
    tracing is off. A missing extra or another protocol is a MeshError, one line saying what to do."""
    if not tracing_enabled(environ):
        return None
    for name in PROTOCOL_VARIABLES:
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != PROTOCOL:
                raise MeshError(
                    f"{name}={protocol}: Mesh exports traces over OTLP {PROTOCOL} only; set that or unset it"
                )
            break
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise MeshError(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but tracing is not installed: "
            "pip install 'mesh-gateway[otel]' (or unset the OTEL_EXPORTER_OTLP_* endpoint)"
        ) from None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider
