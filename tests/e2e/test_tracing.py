"""OpenTelemetry traces: a `mesh up` with OTEL_EXPORTER_OTLP_ENDPOINT exports a SERVER span per chat request (the
child of the client's `traceparent`) and a CLIENT span for its upstream call, whose context goes upstream; the spans
reach a real OTLP/HTTP receiver as protobuf. Without the variable no trace context goes upstream."""

from __future__ import annotations

import gzip
import json
import os
import secrets
import threading
import time
from decimal import Decimal

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests import http_calls
from tests.e2e.conftest import funded_key, own_mesh
from tests.fakes.server import BackgroundServer

MODEL = "acme/gpt-test"


class OtlpReceiver:
    """An OTLP/HTTP trace receiver: POST /v1/traces with an ExportTraceServiceRequest (protobuf) body."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, Span]] = []  # (the resource's attributes, the span)
        self.lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        if scope["path"] != "/v1/traces" or scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        assert headers.get(b"content-type") == b"application/x-protobuf"
        if headers.get(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)
        answer = ExportTraceServiceResponse().SerializeToString()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/x-protobuf")]}
        )
        await send({"type": "http.response.body", "body": answer})

    def wait_for(self, found, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                result = found(list(self.spans))
            if result:
                return result
            time.sleep(0.05)
        raise AssertionError(f"no such spans among {len(self.spans)} exported")


def attributes(holder) -> dict:
    values = {}
    for item in holder.attributes:
        kind = item.value.WhichOneof("value")
        values[item.key] = getattr(item.value, kind)
    return values


@pytest.fixture(scope="module")
def receiver():
    otlp = OtlpReceiver()
    with BackgroundServer(otlp) as server:
        otlp.url = server.url
        yield otlp


@pytest.fixture(scope="module")
def traced_config(tmp_path_factory, upstream):
    path = tmp_path_factory.mktemp("tracing-config") / "mesh.toml"
    path.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{upstream.url}/v1"

[[models]]
id = "{MODEL}"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 256
""")
    return path


@pytest.fixture(scope="module")
def traced_mesh(tmp_path_factory, traced_config, receiver):
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with own_mesh(tmp_path_factory, traced_config, "traced", env) as process:
        yield process


def client_traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def spans_of(receiver: OtlpReceiver, mesh_trace_id: str) -> tuple[dict, Span, Span]:
    """The server span of the request with this x-mesh-trace-id, its resource, and its upstream call's span."""

    def found(spans):
        server = [(r, s) for r, s in spans if attributes(s).get("mesh.trace_id") == mesh_trace_id]
        if not server:
            return None
        resource, span = server[0]
        clients = [s for _, s in spans if s.parent_span_id == span.span_id and s.kind == Span.SPAN_KIND_CLIENT]
        return (resource, span, clients[0]) if clients else None

    return receiver.wait_for(found)


def logged_cost(mesh, token: str, trace_id: str) -> Decimal:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        answer = http_calls.get(
            f"{mesh.url}/api/logs/{trace_id}", headers={"authorization": f"Bearer {token}"}, timeout=10
        )
        if answer.status_code == 200:
            return Decimal(answer.json()["cost_usd"])
        time.sleep(0.1)
    raise AssertionError(f"request {trace_id} never logged")


def assert_traced(receiver, upstream, mesh, key, response_trace_id, usage, response_model, stream, client) -> None:
    client_trace, client_span, _ = client
    resource, server, upstream_call = spans_of(receiver, response_trace_id)
    assert resource["service.name"] == "mesh"
    assert server.kind == Span.SPAN_KIND_SERVER
    assert server.name == f"chat {MODEL}"
    assert server.trace_id.hex() == client_trace and server.parent_span_id.hex() == client_span
    got = attributes(server)
    assert got["gen_ai.system"] == "acme"  # an openai-compatible provider: its name
    assert got["gen_ai.operation.name"] == "chat"
    assert got["gen_ai.request.model"] == MODEL
    assert got["gen_ai.response.model"] == response_model
    assert got["gen_ai.request.max_tokens"] == 20
    assert got["gen_ai.request.temperature"] == 0.25
    assert got["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert got["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert got["http.response.status_code"] == 200
    assert got["mesh.key_id"] == key.created["id"] and got["mesh.account_id"] == key.account_id
    assert got["mesh.stream"] is stream
    assert Decimal(got["mesh.cost_usd"]) == logged_cost(mesh, key.token, response_trace_id) > 0
    assert server.status.code != server.status.STATUS_CODE_ERROR

    assert upstream_call.trace_id == server.trace_id
    assert upstream_call.name == "chat gpt-test"
    assert server.start_time_unix_nano <= upstream_call.start_time_unix_nano
    assert upstream_call.end_time_unix_nano <= server.end_time_unix_nano
    sent = upstream.request_headers[-1][b"traceparent"].decode().split("-")
    assert sent[1] == client_trace and sent[2] == upstream_call.span_id.hex()


def chat_body(stream: bool) -> dict:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "trace me please"}],
        "max_tokens": 20,
        "temperature": 0.25,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def test_a_plain_request_is_a_server_span_under_the_clients_with_its_upstream_call_inside(
    traced_mesh, receiver, upstream
):
    key = funded_key(traced_mesh)
    client = client_traceparent()
    answer = http_calls.post(
        traced_mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key.key}", "traceparent": client[2], "tracestate": "vendor=1"},
        json=chat_body(stream=False),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert upstream.request_headers[-1][b"tracestate"] == b"vendor=1"
    document = answer.json()
    assert_traced(
        receiver,
        upstream,
        traced_mesh,
        key,
        answer.headers["x-mesh-trace-id"],
        document["usage"],
        document["model"],
        False,
        client,
    )


def test_a_streamed_request_is_traced_until_its_stream_ends(traced_mesh, receiver, upstream):
    key = funded_key(traced_mesh)
    client = client_traceparent()
    usage, model = None, None
    with http_calls.stream(
        "POST",
        traced_mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key.key}", "traceparent": client[2]},
        json=chat_body(stream=True),
        timeout=30,
    ) as answer:
        assert answer.status_code == 200
        trace_id = answer.headers["x-mesh-trace-id"]
        for line in answer.iter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                model = model or chunk.get("model")
                usage = chunk.get("usage") or usage
    assert usage is not None
    assert_traced(receiver, upstream, traced_mesh, key, trace_id, usage, model, True, client)


def test_a_refused_request_is_an_error_span(traced_mesh, receiver):
    client = client_traceparent()
    answer = http_calls.post(
        traced_mesh.url + "/v1/chat/completions",
        headers={"authorization": "Bearer mk-not-a-key", "traceparent": client[2]},
        json=chat_body(stream=False),
        timeout=30,
    )
    assert answer.status_code == 401
    trace_id = answer.headers["x-mesh-trace-id"]

    def found(spans):
        return [s for _, s in spans if attributes(s).get("mesh.trace_id") == trace_id]

    (span,) = receiver.wait_for(found)
    assert span.trace_id.hex() == client[0] and span.parent_span_id.hex() == client[1]
    assert span.status.code == span.status.STATUS_CODE_ERROR
    assert attributes(span)["http.response.status_code"] == 401
    assert attributes(span)["error.type"] == "invalid_api_key"


def test_without_the_endpoint_no_traceparent_goes_upstream(mesh, fake_openai):
    assert not any(name.startswith("OTEL_EXPORTER_OTLP") for name in os.environ)  # `mesh` inherits this environment
    key = funded_key(mesh)
    client = client_traceparent()
    body = chat_body(stream=False)
    answer = http_calls.post(
        mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key.key}", "traceparent": client[2]},
        json=body,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert b"traceparent" not in fake_openai.request_headers[-1]
    assert b"tracestate" not in fake_openai.request_headers[-1]
