"""What a gateway request's spans say (gateway/span_attributes.py, gateway/tracing.py), when tracing is on
(api/telemetry.py): attributes built from the request and its usage event; an embeddings request traced in
process, on the SDK with an in-memory exporter."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import datetime, timezone

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from api.servers import MeshError
from api.telemetry import tracer_provider, tracing_enabled
from domain.pricing import Price
from domain.usage import UsageRecorded
from gateway.admission import KeyInfo
from gateway.app import Gateway
from gateway.catalog import Catalog, Model, Provider
from gateway.fields import OPENAI_CHAT_FIELDS, OPENAI_EMBEDDINGS_FIELDS
from gateway.keys import KeyCache
from gateway.lease_admission import Budgets
from gateway.leases import FREE
from gateway.providers.base import Reply, Usage
from gateway.span_attributes import gen_ai_system, request_attributes, span_name, usage_attributes
from gateway.tracing import TracedGateway


def event(**fields) -> UsageRecorded:
    base = dict(
        trace_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        model="acme/m",
        requested_model="acme/m",
        provider="acme",
        prompt_tokens=11,
        completion_tokens=7,
        prompt_per_1k=0,
        completion_per_1k=0,
        cost=1_234_567,  # pico-USD
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=1,
        stream=True,
    )
    return UsageRecorded(**(base | fields))


def test_gen_ai_system_is_the_provider_kind_or_an_openai_compatible_servers_name():
    assert gen_ai_system(Provider("main", "openai", None)) == "openai"
    assert gen_ai_system(Provider("claude", "anthropic", None)) == "anthropic"
    assert gen_ai_system(Provider("g", "gemini", None)) == "gemini"
    assert gen_ai_system(Provider("vllm-east", "openai-compatible", "http://x/v1")) == "vllm-east"


def test_span_name_is_operation_and_model():
    assert span_name("chat", "acme/m") == "chat acme/m"
    assert span_name("embeddings", None) == "embeddings"


def test_request_attributes_take_the_sent_limit_and_temperature_only_when_sent():
    assert request_attributes({"max_tokens": 50, "temperature": 1}) == {
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 1.0,
    }
    assert request_attributes({"max_completion_tokens": 9, "max_tokens": 9}) == {"gen_ai.request.max_tokens": 9}
    assert request_attributes({"messages": []}) == {}
    assert request_attributes({"max_tokens": True, "temperature": "hot"}) == {}


def test_usage_attributes_carry_the_billed_tokens_and_the_exact_cost():
    billed = event()
    got = usage_attributes(billed, "acme")
    assert got == {
        "gen_ai.system": "acme",
        "gen_ai.request.model": "acme/m",
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "mesh.trace_id": str(billed.trace_id),
        "mesh.key_id": str(billed.key_id),
        "mesh.account_id": str(billed.account_id),
        "mesh.model": "acme/m",
        "mesh.cost_usd": "0.000001234567",
        "mesh.stream": True,
    }
    # routed to the key's default model: that is the model the request asked for
    assert usage_attributes(event(requested_model=None), "acme")["gen_ai.request.model"] == "acme/m"


def test_tracing_is_on_only_with_an_otlp_endpoint():
    assert not tracing_enabled({})
    assert not tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": " ", "OTEL_SERVICE_NAME": "x"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert tracer_provider({}) is None


def test_another_protocol_or_a_missing_extra_refuses_to_start(monkeypatch):
    with pytest.raises(MeshError, match="http/protobuf only"):
        tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)  # not installed
    with pytest.raises(MeshError, match=r"pip install 'mesh-gateway\[otel\]'"):
        tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})


def test_service_name_defaults_to_mesh(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        assert provider.resource.attributes["service.name"] == "mesh"
    finally:
        provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    provider = tracer_provider({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    try:
        assert provider.resource.attributes["service.name"] == "gateway-eu"
    finally:
        provider.shutdown()


class EmbeddingsAdapter:
    chat_fields = OPENAI_CHAT_FIELDS
    embeddings_fields = OPENAI_EMBEDDINGS_FIELDS
    body = msgspec.json.encode({"object": "list", "model": "emb-upstream-2", "data": [], "usage": {}})

    async def chat(self, model, body):
        raise AssertionError("not called")

    async def embeddings(self, model, body):
        return Reply(self.body, Usage(4, 0), 1)

    async def aclose(self):
        pass


class DropUsage:
    def submit(self, event):
        stored = asyncio.get_running_loop().create_future()
        stored.set_result(None)
        return stored


class NoBudgets(Budgets):
    async def reserve(self, key, minimum, wanted):
        return FREE

    def release(self, ticket, spent):
        pass


async def test_an_embeddings_request_is_a_server_span_with_its_upstream_call_inside():
    key = KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None)

    async def load(_hash):
        return key

    catalog = Catalog(
        [Provider("emb", "openai", "http://unused")], [Model("emb/e", "emb", "e-up", Price.from_usd("0.1", "0"))]
    )
    gateway = Gateway(catalog, {"emb": EmbeddingsAdapter()}, KeyCache(load), NoBudgets(None), DropUsage())
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = TracedGateway(gateway, provider.get_tracer("test"))
    sent: list[dict] = []
    body = msgspec.json.encode({"model": "emb/e", "input": "four words in here"})

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/v1/embeddings",
        "method": "POST",
        "headers": [(b"authorization", b"Bearer mk-anything")],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    upstream_call, server = exporter.get_finished_spans()
    assert server.kind == SpanKind.SERVER and server.name == "embeddings emb/e"
    assert server.parent is None  # no traceparent from the client: a trace of its own
    assert upstream_call.kind == SpanKind.CLIENT and upstream_call.parent.span_id == server.context.span_id
    assert upstream_call.name == "embeddings e-up"
    assert server.attributes["gen_ai.system"] == "openai"
    assert server.attributes["gen_ai.operation.name"] == "embeddings"
    assert server.attributes["gen_ai.response.model"] == "emb/e"  # what the answer names: the Mesh id
    assert upstream_call.attributes["gen_ai.response.model"] == "emb-upstream-2"  # what the upstream said
    assert server.attributes["gen_ai.usage.input_tokens"] == 4
    assert server.attributes["mesh.cost_usd"] == "0.000400"  # 4 tokens at 0.1 USD per 1K
    assert server.attributes["mesh.key_id"] == str(key.key_id)
    assert server.status.status_code != StatusCode.ERROR
    assert dict(sent[0]["headers"])[b"x-mesh-trace-id"].decode() == server.attributes["mesh.trace_id"]
    provider.shutdown()
