"""OpenTelemetry traces of gateway requests, wrapped around the Gateway only when tracing is on (api/telemetry.py):
off, nothing here is imported and a request pays nothing for it but one attribute check per upstream request.

Per chat or embeddings request, a SERVER span from its arrival to the end of its answer (or stream), the child of
the client's W3C `traceparent`; inside it a CLIENT span for the upstream call, from sending the upstream request to
the end of its answer (for a stream: until the upstream stream closes), whose context goes upstream as
`traceparent`/`tracestate`. The server span's attributes (gateway/span_attributes.py) come from the request's
usage event, so they are what it was billed for."""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import AsyncIterator, Awaitable, Callable

import msgspec
from opentelemetry import context, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from domain.usage import UsageRecorded
from gateway.app import Gateway
from gateway.asgi import Receive, Scope, Send, header
from gateway.catalog import Model
from gateway.providers.base import Adapter, Reply, StreamReply
from gateway.span_attributes import OPERATIONS, gen_ai_system, request_attributes, span_name, usage_attributes

W3C = TraceContextTextMapPropagator()  # traceparent and tracestate, nothing else (no baggage goes upstream)


class _Named(msgspec.Struct):
    """The `model` an OpenAI-shaped answer (or stream chunk) names."""

    model: str | None = None


class _Error(msgspec.Struct):
    code: str | None = None
    message: str | None = None


class _ErrorBody(msgspec.Struct):
    error: _Error | None = None


_decode_named = msgspec.json.Decoder(_Named).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode


def _response_model(document: bytes) -> str | None:
    try:
        return _decode_named(document).model
    except msgspec.DecodeError:
        return None


def _first_chunk(frame: bytes) -> bytes:
    """The JSON of the first `data: ...` event of an SSE frame."""
    start = frame.find(b"data:")
    if start < 0:
        return b""
    end = frame.find(b"\n", start)
    return frame[start + 5 : end if end >= 0 else len(frame)].strip()


class _Request:
    """What one traced request learns on its way, put on its server span when it ends."""

    __slots__ = ("span", "operation", "event", "status", "error", "body_attributes", "response_model", "trace_id")

    def __init__(self, span: Span, operation: str):
        self.span, self.operation = span, operation
        self.event: UsageRecorded | None = None
        self.status = 0
        self.error: _Error | None = None
        self.body_attributes: dict | None = None
        self.response_model: str | None = None
        self.trace_id: str | None = None


_request: ContextVar[_Request | None] = ContextVar("mesh_traced_request", default=None)


def trace_headers() -> bytes:
    """The header lines naming the current span (the upstream call's), for the upstream request's header block."""
    carrier: dict[str, str] = {}
    W3C.inject(carrier)
    return b"".join(f"{name}: {value}\r\n".encode() for name, value in carrier.items())


def _failed(span: Span, exc: BaseException) -> None:
    message = getattr(exc, "message", None) or type(exc).__name__
    span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, message))


class _TracedFrames:
    """A stream's frames, ending its upstream call's span when the stream closes (or fails)."""

    def __init__(self, frames: AsyncIterator[bytes], span: Span, request: _Request | None):
        self._frames, self._span, self._request = frames, span, request
        self._first = True
        self._ended = False

    def __aiter__(self) -> "_TracedFrames":
        return self

    async def __anext__(self) -> bytes:
        try:
            frame = await self._frames.__anext__()
        except StopAsyncIteration:
            self._end()
            raise
        except BaseException as exc:
            _failed(self._span, exc)
            self._end()
            raise
        if self._first:
            self._first = False
            model = _response_model(_first_chunk(frame))
            if model is not None:
                self._span.set_attribute("gen_ai.response.model", model)
                if self._request is not None:
                    self._request.response_model = model
        return frame

    async def aclose(self) -> None:
        try:
            close = getattr(self._frames, "aclose", None)
            if close is not None:
                await close()
        finally:
            self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()


class TracedAdapter:
    """An adapter whose upstream calls are CLIENT spans, the current span while the upstream request is sent (so
    its `traceparent` names it)."""

    def __init__(self, adapter: Adapter, tracer: Tracer, system: str):
        self.adapter, self.tracer, self.system = adapter, tracer, system
        self.chat_fields = adapter.chat_fields
        self.embeddings_fields = getattr(adapter, "embeddings_fields", frozenset())
        if getattr(adapter, "embeddings", None) is not None:  # the gateway asks whether a provider serves them
            self.embeddings = self._embeddings

    def _start(self, operation: str, model: Model, body: dict) -> tuple[Span, _Request | None]:
        request = _request.get()
        attributes = {
            "gen_ai.system": self.system,
            "gen_ai.operation.name": operation,
            "gen_ai.request.model": model.upstream,
            **request_attributes(body),
        }
        if request is not None:
            request.body_attributes = request_attributes(body)
        span = self.tracer.start_span(f"{operation} {model.upstream}", kind=SpanKind.CLIENT, attributes=attributes)
        return span, request

    async def _call(self, operation: str, model: Model, body: dict, call: Callable[[Model, dict], Awaitable[Reply]]):
        span, request = self._start(operation, model, body)
        token = context.attach(trace.set_span_in_context(span))
        try:
            reply = await call(model, body)
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        model_name = _response_model(reply.body)
        if model_name is not None:
            span.set_attribute("gen_ai.response.model", model_name)
            if request is not None:
                request.response_model = model_name
        span.set_attribute("gen_ai.usage.input_tokens", reply.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", reply.usage.completion_tokens)
        span.end()
        return reply

    async def chat(self, model: Model, body: dict) -> Reply:
        return await self._call("chat", model, body, self.adapter.chat)

    async def _embeddings(self, model: Model, body: dict) -> Reply:
        return await self._call("embeddings", model, body, self.adapter.embeddings)  # type: ignore[attr-defined]

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        span, request = self._start("chat", model, body)
        token = context.attach(trace.set_span_in_context(span))
        try:
            reply = await self.adapter.chat_stream(model, body, include_usage)
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        reply._frames = _TracedFrames(reply._frames, span, request)
        return reply

    async def aclose(self) -> None:
        await self.adapter.aclose()


class SpanUsage:
    """The usage publisher, noting each request's usage event for its server span on the way."""

    def __init__(self, usage):
        self.usage = usage

    def submit(self, event: UsageRecorded):
        request = _request.get()
        if request is not None:
            request.event = event
        return self.usage.submit(event)


class TracedGateway:
    """The gateway's ASGI app with a SERVER span around each chat and embeddings request."""

    def __init__(self, gateway: Gateway, tracer: Tracer):
        self.gateway, self.tracer = gateway, tracer
        self.systems = {name: gen_ai_system(provider) for name, provider in gateway.catalog.providers.items()}
        gateway.adapters = {
            name: TracedAdapter(adapter, tracer, self.systems.get(name, name))
            for name, adapter in gateway.adapters.items()
        }
        gateway.usage = SpanUsage(gateway.usage)
        for traced in gateway.adapters.values():
            upstream = getattr(traced.adapter, "upstream", None)
            if upstream is not None:
                upstream.trace_headers = trace_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        operation = OPERATIONS.get(scope["path"]) if scope.get("method") == "POST" else None
        if operation is None:
            await self.gateway(scope, receive, send)
            return
        arrival = time.time_ns()
        carrier = {}
        for name in ("traceparent", "tracestate"):
            value = header(scope, name.encode())
            if value is not None:
                carrier[name] = value
        parent = W3C.extract(carrier)
        span = self.tracer.start_span(
            operation,
            parent,
            SpanKind.SERVER,
            attributes={"gen_ai.operation.name": operation, "http.request.method": "POST", "url.path": scope["path"]},
            start_time=arrival,
        )
        request = _Request(span, operation)
        token = context.attach(trace.set_span_in_context(span, parent))
        noted = _request.set(request)

        async def traced_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                request.status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-mesh-trace-id":
                        request.trace_id = value.decode()
            elif request.status >= 400 and request.error is None and message.get("body"):
                try:
                    request.error = _decode_error(message["body"]).error
                except msgspec.DecodeError:
                    pass
            await send(message)

        try:
            await self.gateway(scope, receive, traced_send)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            _request.reset(noted)
            context.detach(token)
            self._finish(request)

    def _finish(self, request: _Request) -> None:
        span, event = request.span, request.event
        if request.trace_id is not None:
            span.set_attribute("mesh.trace_id", request.trace_id)
        if request.status:
            span.set_attribute("http.response.status_code", request.status)
        if request.body_attributes:
            span.set_attributes(request.body_attributes)
        if event is not None:  # the model the answer names: the Mesh id of the model that answered
            span.set_attribute("gen_ai.response.model", event.model)
        elif request.response_model is not None:
            span.set_attribute("gen_ai.response.model", request.response_model)
        if event is not None:
            span.set_attributes(usage_attributes(event, self.systems.get(event.provider, event.provider)))
            span.update_name(span_name(request.operation, event.requested_model or event.model))
            if event.error is not None:  # a stream that failed or was cut after its answer had begun
                span.set_attribute("error.type", str(event.http_status))
                span.set_status(Status(StatusCode.ERROR, event.error))
        if request.status >= 400:
            error = request.error or _Error()
            span.set_attribute("error.type", error.code or str(request.status))
            span.set_status(Status(StatusCode.ERROR, error.message or f"HTTP {request.status}"))
        span.end()
