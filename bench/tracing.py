"""What OpenTelemetry tracing adds per request: the gateway's request path with tracing off vs on.

Both runs push the same priced chat request, with a client `traceparent`, through the real Gateway ASGI app
(budgets in memory, as in bench/admission.py), with an in-process provider that answers at once but builds its
upstream header block the way gateway/providers/base.py's Upstream does (so the `traceparent` that goes upstream
is counted), and a usage sink that drops events. On, the app is wrapped by gateway/tracing.py's TracedGateway on
the SDK's TracerProvider with its BatchSpanProcessor, as `mesh up` runs it, exporting to a sink that drops the
spans (the OTLP export itself runs on the processor's own thread, off the request path).

    python -m bench.tracing [requests]
"""

from __future__ import annotations

import asyncio
import sys
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.admission import DropUsage, FundedKey, InstantAdapter, MemoryBroker, chat_scope, one_model_catalog
from gateway.app import Gateway
from gateway.keys import KeyCache
from gateway.lease_admission import Budgets
from gateway.providers.base import Reply, Usage
from gateway.tracing import TracedGateway

import msgspec

CLIENT_TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class HeadOnly:
    """The part of an Upstream the request path touches: its header block and the tracing hook."""

    def __init__(self) -> None:
        self._head = b"host: upstream\r\ncontent-type: application/json\r\n"
        self.trace_headers = None


class InstantUpstreamAdapter(InstantAdapter):
    def __init__(self) -> None:
        self.upstream = HeadOnly()

    async def chat(self, model, body):
        upstream = self.upstream
        head = upstream._head if upstream.trace_headers is None else upstream._head + upstream.trace_headers()
        assert head
        return Reply(self.body, Usage(10, 5), 1)


class DropSpans(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


async def run(requests: int) -> None:
    funded = FundedKey()
    account, secret, key, load = funded.account, funded.secret, funded.key, funded.load
    catalog = one_model_catalog()
    body = msgspec.json.encode({"model": "p/m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    scope = chat_scope(secret.plain, "/v1/chat/completions", (b"traceparent", CLIENT_TRACEPARENT))

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    exporter = DropSpans()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("mesh.gateway")

    async def measure(traced: bool) -> float:
        gateway = Gateway(
            catalog, {"p": InstantUpstreamAdapter()}, KeyCache(load), Budgets(MemoryBroker(key, account)), DropUsage()
        )
        app = TracedGateway(gateway, tracer) if traced else gateway
        for _ in range(1000):  # warm up: caches, the first lease
            await app(scope, receive, send)
        started = time.perf_counter()
        for _ in range(requests):
            await app(scope, receive, send)
        return (time.perf_counter() - started) / requests * 1e6

    rows = []
    for _ in range(3):  # interleave to even out noise
        rows.append((await measure(False), await measure(True)))
    provider.shutdown()
    off = min(r[0] for r in rows)
    on = min(r[1] for r in rows)
    print(f"{'path':<34}{'µs/request':>12}")
    print(f"{'gateway, tracing off':<34}{off:>12.1f}")
    print(f"{'gateway, tracing on':<34}{on:>12.1f}")
    added = on - off
    print(f"{'added by tracing':<34}{added:>12.1f}   (ratio on/off {on / off:.2f}; {exporter.exported} spans exported)")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
