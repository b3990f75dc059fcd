"""The OpenAI-compatible endpoint, as a plain ASGI app (the hot path skips the web framework).

Per request: authenticate the key, validate the body, resolve the model and its
price, check the balance, call the provider, make its UsageRecorded event durable, then finish the answer.
The gateway never changes state itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterable, Awaitable, Callable

import msgspec

from domain.credentials import hash_token
from domain.usage import MAX_LOGGED_BODY, UsageRecorded
from gateway.admission import KeyInfo, bearer_token
from domain.money import pico_to_usd
from domain.pricing import Price
from gateway.budget import FREE, BudgetRefusal, Budgets, Ticket
from gateway.bodies import BodyPublisher
from gateway.catalog import Catalog, Model
from gateway.fields import PRICED_PARTS, check_fields, refuse_file_ids
from gateway.freelimit import DEFAULT_FREE_RPM, FreeRateLimit
from gateway.keys import KeyCache
from gateway.templates import TemplateCache, TemplateUse
from gateway.errors import GatewayError, invalid
from gateway.providers.base import SSE_DONE, Adapter, Reply, StreamReply, Usage
from gateway.usage import NotStored, UsagePublisher

log = logging.getLogger("mesh.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

MAX_BODY = 16 * 1024 * 1024
PROMPT_OVERHEAD = 16  # tokens a provider adds to a prompt (priming the reply)
MESSAGE_OVERHEAD = 8  # tokens a provider adds around each message (role, separators)
# Tokens a provider adds to a prompt with tools (the tool-use preamble): the largest Anthropic publishes is 530
# (Claude 3 Opus, tool_choice auto); the others' are smaller.
TOOLS_OVERHEAD = 530
FILE_URL_KINDS = frozenset({"gemini"})  # providers that fetch any URL as a file part (a PDF, a video), not an image
DISCONNECT_DRAIN_SECONDS = 30.0  # how long a stream whose client left is still read, for the upstream's own usage


TRACE_RANDOM_BYTES = 10  # of a trace id; 74 of their 80 bits are used
MS_MASK = (1 << 48) - 1
RAND_B_MASK = (1 << 62) - 1


class _TraceIds:
    """Time-ordered UUIDs (version 7, RFC 9562): the Unix time in milliseconds, then 74 random bits.

    Every table keyed by trace id (the request logs, their bodies) then inserts each new request at the right
    edge of its index, a page in memory, instead of at a random page of an index of millions of entries (see
    bench/README.md). The random bits come from one os.urandom read per 256 ids (uuid4() makes a syscall each)."""

    def __init__(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> uuid.UUID:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(TRACE_RANDOM_BYTES * 256), 0
        rand = int.from_bytes(self._pool[self._at : self._at + TRACE_RANDOM_BYTES])
        self._at += TRACE_RANDOM_BYTES
        return uuid7(time.time_ns() // 1_000_000, rand)


def uuid7(ms: int, rand: int) -> uuid.UUID:
    """The version 7 UUID of Unix time `ms` (milliseconds) and the low 74 bits of `rand`."""
    # unix_ts_ms (48 bits) | version 7 (4) | rand_a (12) | variant 0b10 (2) | rand_b (62)
    return uuid.UUID(int=(ms & MS_MASK) << 80 | 7 << 76 | (rand >> 62 & 0xFFF) << 64 | 2 << 62 | rand & RAND_B_MASK)


new_trace_id = _TraceIds()


class ChatRequest(msgspec.Struct):
    """The fields the gateway itself checks; the others go to the provider through its allow-list
    (gateway/fields.py)."""

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None


class EmbeddingsRequest(msgspec.Struct):
    input: str | list[Any]  # a string, strings, token ids, or lists of token ids
    model: str | None = None


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        adapters: dict[str, Adapter],
        keys: KeyCache,
        budgets: Budgets,
        usage: UsagePublisher,
        templates: TemplateCache | None = None,
        drain_seconds: float = DISCONNECT_DRAIN_SECONDS,
        free_rpm: int = DEFAULT_FREE_RPM,
        bodies: BodyPublisher | None = None,
    ):
        self.catalog = catalog
        self.free_limit = FreeRateLimit(free_rpm)
        self.adapters = adapters
        self.keys = keys
        self.budgets = budgets
        self.usage = usage
        self.templates = templates
        self.drain_seconds = drain_seconds
        self.bodies = bodies  # None: bodies are not logged (MESH_LOG_BODIES=off), and cost nothing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace_id = new_trace_id()
        started = time.perf_counter_ns()
        headers = [
            (b"content-type", b"application/json"),
            (b"x-mesh-trace-id", str(trace_id).encode()),
            (b"x-content-type-options", b"nosniff"),  # the rest of api/security_headers.py is for pages
        ]
        request_id = _header(scope, b"x-request-id")
        if request_id is not None:
            headers.append((b"x-request-id", request_id.encode("latin-1")))
        path, method = scope["path"], scope["method"]
        try:
            if path == "/v1/chat/completions" and method == "POST":
                await self._chat(scope, receive, send, headers, trace_id, started, request_id)
            elif path == "/v1/embeddings" and method == "POST":
                await self._embeddings(scope, receive, send, headers, trace_id, started, request_id)
            elif path == "/v1/models" and method == "GET":
                await _respond(send, 200, headers, self._models(await self._authenticate(scope)))
            elif path in ("/v1/chat/completions", "/v1/embeddings", "/v1/models"):
                raise GatewayError(
                    405, f"{method} is not allowed on {path}", "invalid_request_error", "method_not_allowed"
                )
            else:
                raise GatewayError(404, f"unknown endpoint {path}", "invalid_request_error", "unknown_url")
        except GatewayError as exc:
            await _respond(send, exc.status, headers + exc.headers, exc.body())

    async def _authenticate(self, scope: Scope) -> KeyInfo:
        token = bearer_token(scope["headers"])
        key = await self.keys.get(hash_token(token))
        if key is None:
            raise GatewayError(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        refusal = key.refusal(datetime.now(timezone.utc))
        if refusal is not None:
            raise refusal
        return key

    def _models(self, key: KeyInfo) -> bytes:
        return msgspec.json.encode(
            {
                "object": "list",
                "data": [
                    {"id": m.id, "object": "model", "created": 0, "owned_by": m.provider}
                    for m in self.catalog.enabled()
                    if key.may_use(m.id)
                ],
            }
        )

    async def _chat(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list,
        trace_id: uuid.UUID,
        started: int,
        request_id: str | None,
    ) -> None:
        key = await self._authenticate(scope)
        raw = await _read_body(receive)
        body = _decode_object(raw)
        template = await self._template(key, body, headers)
        request = _parse_chat(body)
        model = self._resolve(request, key)
        adapter = self.adapters[model.provider]
        check_fields(body, adapter.chat_fields, model.id)
        refuse_file_ids(request.messages)
        if model.price.is_free:  # refused before anything is recorded
            self.free_limit.admit(key.account_id, model.id)
        ticket, fitted, prompt_bound = await self._reserve(key, model, request, body)
        if fitted is not None:  # the key fits limits to its budget: the answer says to what
            headers.append((b"x-mesh-max-tokens", str(fitted).encode()))
        record = _Record(trace_id, key, model, request.model, started, request_id, request.stream, ticket)
        record.prompt_bound = prompt_bound
        record.template = template
        if self.bodies is not None:
            record.request_body = raw
        try:
            if request.stream:
                include_usage = bool((request.stream_options or {}).get("include_usage"))
                try:
                    reply = await adapter.chat_stream(model, body, include_usage)
                except GatewayError as exc:
                    await self._emit(record, record.failed(exc))
                    raise
                await self._stream(send, receive, headers, reply, record)
            else:
                try:
                    result: Reply = await adapter.chat(model, body)
                except GatewayError as exc:
                    await self._emit(record, record.failed(exc))
                    await _respond(send, exc.status, headers, exc.body())
                    return
                # billed first: a client gone while the answer is written still owes what the upstream did
                record.response_body = result.body
                await self._emit(record, record.done(result.usage, result.upstream_us, None))
                await _respond(send, 200, headers, result.body)
        finally:
            if not record.emitted:  # an unexpected failure: free the reservation all the same
                self.budgets.release(record.ticket, 0)
            elif record.request_body is not None:  # bodies logged: the request is over, its answer complete
                self.bodies.submit(
                    trace_id, key.account_id, datetime.now(timezone.utc), record.request_body, record.response_body
                )

    async def _embeddings(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list,
        trace_id: uuid.UUID,
        started: int,
        request_id: str | None,
    ) -> None:
        key = await self._authenticate(scope)
        body = _decode_object(await _read_body(receive))
        try:
            request = msgspec.convert(body, EmbeddingsRequest)
        except msgspec.ValidationError as exc:
            raise invalid(f"invalid request: {exc}", "invalid_request") from None
        if not request.input or (
            isinstance(request.input, list)
            and not all(
                isinstance(i, (str, int)) or (isinstance(i, list) and all(isinstance(t, int) for t in i))
                for i in request.input
            )
        ):
            raise invalid(
                "'input' must be a non-empty string, list of strings, or token ids", "invalid_request", "input"
            )
        model = self._resolve(request, key)
        if model.price.is_free:
            self.free_limit.admit(key.account_id, model.id)
        adapter = self.adapters[model.provider]
        serve = getattr(adapter, "embeddings", None)
        if serve is None:
            raise invalid(f"model {model.id!r} does not serve embeddings", "unsupported_endpoint", "model")
        check_fields(body, adapter.embeddings_fields, model.id, consumed=frozenset())  # templates are for chat
        bound = PROMPT_OVERHEAD + len(msgspec.json.encode(request.input))
        cost = model.price.cost(bound, 0)
        ticket = await self.budgets.reserve(key, cost, cost) if cost else FREE
        record = _Record(trace_id, key, model, request.model, started, request_id, False, ticket)
        record.prompt_bound = None if model.price.is_free else bound
        try:
            result: Reply = await serve(model, body)
        except GatewayError as exc:
            await self._emit(record, record.failed(exc))
            await _respond(send, exc.status, headers, exc.body())
            return
        except BaseException:
            self.budgets.release(ticket, 0)
            raise
        await self._emit(record, record.done(result.usage, result.upstream_us, None))
        await _respond(send, 200, headers, result.body)

    async def _template(self, key: KeyInfo, body: dict, headers: list) -> TemplateUse | None:
        """Apply the prompt template the body names, if any, in place; the answer says which version ran."""
        if self.templates is None:
            return None
        template = await self.templates.expand(key.account_id, body)
        if template is not None:
            headers.append((b"x-mesh-template", f"{template.template_id}@{template.version}".encode()))
        return template

    async def _reserve(
        self, key: KeyInfo, model: Model, request: ChatRequest, body: dict
    ) -> tuple[Ticket, int | None, int | None]:
        """Reserve the request's worst case: its prompt bound and its completion limit, or the model's
        max_output_tokens when it sets none (and then no limit goes upstream). When the budget does not cover
        that, a 402 names the completion tokens it does cover; only a key with fit_to_budget gets its limit set
        to that instead. Returns the reservation, the limit the gateway set, if it set one, and the prompt bound
        (None for a free model)."""
        field = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        asked = request.max_completion_tokens or request.max_tokens
        if asked is not None and asked > model.max_output_tokens:
            raise invalid(
                f"'{field}' is {asked}; model {model.id!r} writes at most {model.max_output_tokens} "
                f"completion tokens: send {field} <= {model.max_output_tokens}",
                "invalid_request",
                field,
            )
        price = model.price
        if price.is_free:
            return FREE, None, None
        prompt_bound = _prompt_bound(body, model, self.catalog.providers[model.provider].kind)
        choices = request.n or 1
        completion = asked or model.max_output_tokens
        worst = price.worst_cost(prompt_bound, completion * choices)

        def unaffordable(refusal: BudgetRefusal) -> tuple[GatewayError, int | None]:
            affordable = _affordable(refusal.available, price, prompt_bound, choices, completion)
            if affordable is None:  # not about money (say, the key was revoked meanwhile)
                return refusal, None
            return _unaffordable(refusal, worst, prompt_bound, completion, choices, affordable), affordable

        try:
            return await self.budgets.reserve(key, minimum=worst, wanted=worst), None, prompt_bound
        except BudgetRefusal as refusal:
            error, affordable = unaffordable(refusal)
            if not key.fit_to_budget or not affordable:
                raise error from None
        fitted = price.worst_cost(prompt_bound, affordable * choices)
        try:
            ticket = await self.budgets.reserve(key, minimum=fitted, wanted=fitted)
        except BudgetRefusal as refusal:  # spent by others meanwhile: what is left now, said the same way
            raise unaffordable(refusal)[0] from None
        for name in ("max_tokens", "max_completion_tokens"):
            if getattr(request, name) is not None:
                body[name] = affordable
        if asked is None:
            body["max_tokens"] = affordable
        return ticket, affordable, prompt_bound

    def _emit(self, record: "_Record", event: UsageRecorded) -> Awaitable[None]:
        """The request is over: swap its reservation for its cost and publish what it cost (both at once, awaited
        or not). Await what it returns before the answer's last byte: it is done once the event is durable
        (acknowledged by JetStream, or in the fsynced spool), shared with every request finishing alongside."""
        record.emitted = True
        self.budgets.release(record.ticket, event.cost)
        return _durable(self.usage.submit(event), event.trace_id)

    async def _stream(self, send: Send, receive: Receive, headers: list, reply: StreamReply, record: "_Record") -> None:
        """Relay the stream. If the client goes away, the upstream keeps going (it bills what it generates all
        the same): it is read to its end, up to `drain_seconds`, for its own usage; only a stream that does not end
        by then is closed and billed from an estimate."""
        stream_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers[1:]]
        await send({"type": "http.response.start", "status": 200, "headers": stream_headers})
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch_disconnect(receive, gone))
        error: str | None = None
        status = 200
        frames: list[bytes] | None = [] if record.request_body is not None else None  # the logged answer

        async def bill() -> None:  # the stream is complete: its bill is durable before its last frame leaves
            await reply.aclose()  # the adapter settles the usage and the upstream time as it closes
            await self._emit(record, record.done(reply.usage, reply.upstream_us, reply.first_token_us))

        try:
            try:
                await relay(reply if frames is None else _recording(reply, frames), send, gone, bill)
            except GatewayError as exc:
                error, status = exc.message, exc.status
            except OSError as exc:
                gone.set()
                error = f"client disconnected ({type(exc).__name__})"
            if gone.is_set() and not record.emitted:
                await drain(reply, self.drain_seconds)
        finally:
            watcher.cancel()
            await reply.aclose()  # closes the upstream response (if still open): it stops generating
        if frames is not None:
            record.response_body = b"".join(frames)
        if record.emitted:
            return
        if gone.is_set():
            error, status = error or "client disconnected mid-stream", 499
        with contextlib.suppress(GatewayError):  # the response has begun: there is nothing more to tell
            await self._emit(record, record.done(reply.usage, reply.upstream_us, reply.first_token_us, error, status))

    def _resolve(self, request: "ChatRequest | EmbeddingsRequest", key: KeyInfo) -> Model:
        model_id = request.model or key.default_model
        if not model_id:
            raise invalid("no model: send 'model' or give this API key a default model", "model_required", "model")
        model = self.catalog.get(model_id)
        if model is None:
            raise GatewayError(
                404,
                f"model {model_id!r} does not exist; GET /v1/models lists the models you can use",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        if not key.may_use(model.id):
            allowed = ", ".join(sorted(key.allowed_models or ()))
            raise GatewayError(
                402,
                f"this API key may not use {model.id!r}; it may use: {allowed}",
                "insufficient_quota",
                "model_not_allowed",
                "model",
            )
        return model


class _Record:
    """Builds the UsageRecorded event for one request."""

    def __init__(
        self,
        trace_id: uuid.UUID,
        key: KeyInfo,
        model: Model,
        requested: str | None,
        started: int,
        request_id: str | None,
        stream: bool,
        ticket: Ticket,
    ):
        self.trace_id, self.key, self.model, self.requested = trace_id, key, model, requested
        self.started, self.request_id, self.stream, self.ticket = started, request_id, stream, ticket
        self.emitted = False
        self.template: TemplateUse | None = None
        self.request_body: bytes | None = None  # set when bodies are logged
        self.response_body: bytes | None = None
        self.prompt_bound: int | None = None  # the prompt tokens reserved (None: a free model)

    def done(
        self,
        usage: Usage,
        upstream_us: int,
        first_token_us: int | None,
        error: str | None = None,
        http_status: int = 200,
    ) -> UsageRecorded:
        price = self.model.price
        if usage.prompt_estimated and self.prompt_bound is not None and usage.prompt_tokens < self.prompt_bound:
            # the upstream counted no prompt (a stream cut before its usage, an upstream that reports none): it
            # bills the whole prompt all the same, images and files included, so Mesh bills what it reserved
            usage = msgspec.structs.replace(usage, prompt_tokens=self.prompt_bound)
        return UsageRecorded(
            trace_id=self.trace_id,
            account_id=self.key.account_id,
            key_id=self.key.key_id,
            model=self.model.id,
            requested_model=self.requested,
            provider=self.model.provider,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            prompt_per_1k=price.prompt_per_1k,
            completion_per_1k=price.completion_per_1k,
            cost=price.cost(
                usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens, usage.cache_write_tokens
            ),
            status="ok" if error is None else "error",
            http_status=http_status,
            timestamp=datetime.now(timezone.utc),
            latency_us=(time.perf_counter_ns() - self.started) // 1000,
            upstream_us=upstream_us,
            first_token_us=first_token_us,
            stream=self.stream,
            estimated=usage.estimated,
            request_id=self.request_id,
            error=error,
            lease_id=self.ticket.lease.id if self.ticket.lease is not None else None,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_per_1k=price.cached,
            cache_write_per_1k=price.cache_write,
            template_id=self.template.template_id if self.template is not None else None,
            template_version=self.template.version if self.template is not None else None,
        )

    def failed(self, exc: GatewayError) -> UsageRecorded:
        return self.done(Usage(), 0, None, exc.message, exc.status)


async def _durable(stored: Awaitable[None], trace_id: uuid.UUID) -> None:
    """Wait until a usage event is stored; if it cannot be, the answer must not leave (503)."""
    try:
        await stored
    except NotStored as exc:
        log.error("usage of %s not recorded, its answer withheld: %s", trace_id, exc)
        raise GatewayError(
            503,
            "this request's usage could not be recorded, so its answer is withheld; try again later",
            "api_error",
            "usage_not_recorded",
        ) from None


async def relay(
    frames: AsyncIterable[bytes], send: Send, gone: asyncio.Event, last: Callable[[], Awaitable[None]] | None = None
) -> None:
    """Send a stream's frames as they come, until it ends or the client is gone. The last frame ([DONE]) goes
    out with the end of the response: one write, not two; `last` runs just before it (the gateway makes the
    stream's bill durable there)."""
    async for frame in frames:
        if gone.is_set():
            return
        ended = frame.endswith(SSE_DONE)
        if ended and last is not None:
            await last()
        await send({"type": "http.response.body", "body": frame, "more_body": not ended})
        if ended:
            return
    if not gone.is_set():
        if last is not None:
            await last()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def drain(frames: AsyncIterable[bytes], seconds: float) -> None:
    """Read what is left of a stream nobody receives any more (the adapter counts it), for at most `seconds`."""

    async def read() -> None:
        async for _ in frames:
            pass

    try:
        await asyncio.wait_for(read(), seconds)
    except (asyncio.TimeoutError, GatewayError):
        pass  # cut off (or the upstream failed): the adapter has billed an estimate of what it saw


async def _recording(frames: AsyncIterable[bytes], into: list[bytes]) -> AsyncIterable[bytes]:
    """The frames as they pass, kept in `into` (the logged response body) up to one byte past MAX_LOGGED_BODY:
    all the log keeps, and enough to know it was cut, however long the stream runs."""
    kept = 0
    async for frame in frames:
        if kept <= MAX_LOGGED_BODY:
            into.append(frame[: MAX_LOGGED_BODY + 1 - kept])
            kept += len(into[-1])
        yield frame


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")[:200]
    return None


def _prompt_bound(body: dict, model: Model, kind: str) -> int:
    """An upper bound of the prompt's tokens, never more than the model's context (a longer prompt is refused
    upstream): a token of text is at least one byte of its JSON and providers add a few tokens around each
    message; an image counts the most its provider publishes for one (`model.image_tokens`); files and
    anything else count the whole context, as nothing smaller is safe; tools count their JSON and the tool-use
    preamble, response formats their JSON. Audio input is refused (PRICED_PARTS): its price is not the text's."""
    size = PROMPT_OVERHEAD
    encode = msgspec.json.encode
    for message in body["messages"]:
        content = message.get("content") if type(message) is dict else None
        if type(content) is not list:
            size += MESSAGE_OVERHEAD + len(encode(message))
            continue
        size += MESSAGE_OVERHEAD + len(encode({k: v for k, v in message.items() if k != "content"}))
        for part in content:
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type == "text":
                size += len(encode(part))
            elif part_type == "image_url" and not (kind in FILE_URL_KINDS and not _image_data_url(part)):
                size += model.image_tokens
            elif part_type in PRICED_PARTS:
                raise invalid(
                    f"{part_type} content is not available through Mesh for model {model.id!r}: "
                    f"{PRICED_PARTS[part_type]} and this model's price does not cover it",
                    "unsupported_parameter",
                    "messages",
                )
            else:
                return model.context_tokens
    if "tools" in body or "functions" in body or "response_format" in body:
        if body.get("tools") or body.get("functions"):
            size += TOOLS_OVERHEAD
        for extra in ("tools", "functions", "response_format"):
            if body.get(extra):
                size += len(encode(body[extra]))
    return size if size < model.context_tokens else model.context_tokens


def _image_data_url(part: dict) -> bool:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return isinstance(url, str) and url.startswith("data:image/")


def _affordable(available: int | None, price: Price, prompt_bound: int, choices: int, completion: int) -> int | None:
    """How many completion tokens (per choice) `available` pico-USD pays for after the prompt's worst case; None
    when the refusal was not about money."""
    if available is None:
        return None
    left = available - price.worst_cost(prompt_bound, 0)
    if left < 0:
        return 0
    per_token = price.cost(0, choices)  # exact: a price is a whole number of pico-USD per token
    return min(completion, left // per_token) if per_token else completion


def _unaffordable(
    refusal: BudgetRefusal, worst: int, prompt_bound: int, completion: int, choices: int, affordable: int
) -> GatewayError:
    """The 402 that says what the budget does cover. It never shrinks the request itself (see fit_to_budget)."""
    cost = (
        f"this request can cost up to {pico_to_usd(worst)} USD (a prompt of up to {prompt_bound} tokens and "
        f"{completion} completion tokens{f' for each of {choices} choices' if choices > 1 else ''})"
    )
    if affordable < 1:
        advice = "what is left does not cover even its prompt"
    elif affordable >= completion:  # what is left covers it, but requests in flight still hold their worst cases
        advice = "part of what is left is held by this API key's requests in flight until they finish; retry then"
    else:
        advice = (
            f"what is left affords {affordable} completion tokens{' per choice' if choices > 1 else ''}: "
            f"send max_tokens ≤ {affordable}"
        )
    return GatewayError(402, f"{refusal.message}; {cost}; {advice}", "insufficient_quota", refusal.code, "max_tokens")


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise GatewayError(
                413,
                f"request body is larger than {MAX_BODY // (1024 * 1024)} MiB",
                "invalid_request_error",
                "body_too_large",
            )
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _decode_object(raw: bytes) -> dict:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:  # msgspec's answer to a body nested deeper than the interpreter's recursion limit
        raise invalid("request body is not valid JSON: it nests too deeply", "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object", "invalid_json")
    return body


def _parse_chat(body: dict) -> ChatRequest:
    try:
        request = msgspec.convert(body, ChatRequest)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request: {exc}", "invalid_request") from None
    if not request.messages:
        raise invalid("'messages' must contain at least one message", "invalid_request", "messages")
    for limit in ("max_tokens", "max_completion_tokens", "n"):
        value = getattr(request, limit)
        if value is not None and value < 1:
            raise invalid(f"'{limit}' must be at least 1, got {value}", "invalid_request", limit)
    if (
        None not in (request.max_tokens, request.max_completion_tokens)
        and request.max_tokens != request.max_completion_tokens
    ):
        raise invalid(
            f"'max_tokens' ({request.max_tokens}) and 'max_completion_tokens' "
            f"({request.max_completion_tokens}) disagree; send one of them (or both equal)",
            "invalid_request",
            "max_completion_tokens",
        )
    return request


async def _respond(send: Send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
