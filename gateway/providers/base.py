"""What every provider adapter gives the gateway: OpenAI-shaped bytes plus the usage to bill."""

from __future__ import annotations

import logging
import time
from typing import AsyncIterator, Callable, Protocol
from urllib.parse import urlencode

import msgspec

from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.providers.upstream_errors import upstream_error, upstream_timeout, upstream_unreachable
from gateway.transport import (
    LeanResponse,
    LeanTransport,
    Target,
    UpstreamClosed,
    UpstreamTimeout,
)

log = logging.getLogger("mesh.gateway")


class Usage(msgspec.Struct):
    prompt_tokens: int = 0  # the whole prompt, cached parts included
    completion_tokens: int = 0  # reasoning / thinking included
    estimated: bool = False  # the upstream reported no usage; counts come from our estimate
    cached_prompt_tokens: int = 0  # of prompt_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens: written to the provider's prompt cache
    reasoning_tokens: int = 0  # of completion_tokens: spent on reasoning / thinking
    # prompt_tokens is Mesh's estimate, the upstream counted none: the gateway bills the prompt bound it
    # reserved instead (gateway/request_record.py), never an estimate of the text alone
    prompt_estimated: bool = False

    def __post_init__(self) -> None:
        # The parts never exceed the whole, whatever an upstream reports: a part too large is cut to what is left.
        if not (self.cached_prompt_tokens or self.cache_write_tokens or self.reasoning_tokens):
            return  # no parts: nothing to cut
        self.cached_prompt_tokens = min(max(self.cached_prompt_tokens, 0), self.prompt_tokens)
        self.cache_write_tokens = min(max(self.cache_write_tokens, 0), self.prompt_tokens - self.cached_prompt_tokens)
        self.reasoning_tokens = min(max(self.reasoning_tokens, 0), self.completion_tokens)

    def openai(self) -> dict:
        """The `usage` object of an OpenAI chat completion, with its breakdown; cache writes (which OpenAI does
        not report) as `prompt_tokens_details.cache_write_tokens` when there are any."""
        prompt_details = {"cached_tokens": self.cached_prompt_tokens}
        if self.cache_write_tokens:
            prompt_details["cache_write_tokens"] = self.cache_write_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": prompt_details,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


class Reply(msgspec.Struct):
    body: bytes  # an OpenAI chat.completion (or embeddings) JSON document
    usage: Usage
    upstream_us: int


class StreamReply:
    """An OpenAI-shaped SSE stream. Iterate it for `data: ...` frames; usage is final once it ends.

    `sent_ns` is when the upstream request went out (`time.perf_counter_ns()`, taken before the adapter opened
    it): the upstream's wait for its headers counts in its time, as a client of that upstream would measure it.
    The first token is kept as a moment, which the gateway measures from the request's arrival."""

    def __init__(self, frames: AsyncIterator[bytes], sent_ns: int):
        self._frames = frames
        # until the adapter settles it: nothing counted, so the prompt bills at its reserved bound
        self.usage = Usage(estimated=True, prompt_estimated=True)
        self.sent_ns = sent_ns
        self.first_token_ns: int | None = None
        self.upstream_us = 0
        # set before the stream's last frame is yielded, for a wire format without [DONE]: the gateway makes the
        # bill durable before that frame leaves (gateway/stream_relay.py)
        self.ended = False
        # what a usage costs, in pico-USD (set by the gateway): the answer's final usage states its charge
        self.priced: Callable[[Usage], int] | None = None

    def cost(self) -> int | None:
        """What the stream's usage so far costs (None: no price known)."""
        return None if self.priced is None else self.priced(self.usage)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._frames

    def mark_first_token(self) -> None:
        if self.first_token_ns is None:
            self.first_token_ns = time.perf_counter_ns()

    def mark_done(self) -> None:
        self.upstream_us = (time.perf_counter_ns() - self.sent_ns) // 1000

    async def aclose(self) -> None:
        close = getattr(self._frames, "aclose", None)
        if close is not None:
            await close()


class Posted(msgspec.Struct):
    """An upstream's answer to a plain POST."""

    status_code: int
    content: bytes


class Adapter(Protocol):
    chat_fields: frozenset[str]  # the request fields it takes (gateway/fields.py)

    async def chat(self, model: Model, body: dict) -> Reply: ...

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply: ...

    async def aclose(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A rough count (about four characters a token) for upstreams that report no usage."""
    return (len(text) + 3) // 4 if text else 0


def estimated_usage(body: dict, generated: str, reported: Usage | None = None) -> Usage:
    """The usage of an answer the upstream did not (fully) count, flagged `estimated`: the counts it did report
    (an Anthropic message_start's prompt, a Gemini chunk's usageMetadata), else Mesh's estimate; the completion
    is at least an estimate of everything generated (`generated`: text, tool calls, visible reasoning). A prompt
    it did not count is `prompt_estimated`: the gateway bills its reserved bound for it."""
    reported = reported or Usage()
    return Usage(
        reported.prompt_tokens or estimate_tokens(prompt_text(body)),
        max(reported.completion_tokens, estimate_tokens(generated)),
        True,
        reported.cached_prompt_tokens,
        reported.cache_write_tokens,
        reported.reasoning_tokens,
        prompt_estimated=not reported.prompt_tokens,
    )


def message_text(messages: list) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(parts)


def prompt_text(body: dict) -> str:
    """Everything a chat request sends as text, for an estimate when the upstream reports no usage: each
    message's text, tool calls and results, and the tool definitions and response format as JSON. (Images and
    files count nothing here: their tokens depend on the provider.)"""
    parts = [message_text(body.get("messages") or [])]
    for message in body.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            parts.extend(str(function.get(name) or "") for name in ("name", "arguments"))
    parts.extend(
        msgspec.json.encode(body[extra]).decode()
        for extra in ("tools", "functions", "response_format")
        if body.get(extra)
    )
    return "\n".join(parts)


def sse(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


class Upstream:
    """One pooled HTTP client per provider, with its connect and total timeouts; transport failures and
    error statuses come out as GatewayErrors. `error_message` pulls the provider's message out of its error body.

    Requests go straight to the provider's keep-alive pool (gateway/transport.py) with a header block built
    once; an httpx.AsyncClient costs more CPU per request than all the rest of the gateway (bench/gateway.py)."""

    def __init__(self, provider: Provider, headers: dict[str, str], error_message: Callable[[bytes], str]):
        self.provider = provider
        self.error_message = error_message
        self.base = Target(provider.base_url)
        self.transport = LeanTransport()
        self._headers = {"content-type": "application/json", **headers}
        self._head = self.head_with({})
        self._targets: dict[str, Target] = {}  # per path, so a request parses and joins nothing
        # Set only while tracing is on (gateway/tracing.py): the header lines (`traceparent`, `tracestate`) naming
        # the running upstream call's span, added to each request's header block.
        self.trace_headers: Callable[[], bytes] | None = None

    def head_with(self, headers: dict[str, str]) -> bytes:
        """The request header block with `headers` added to (or replacing) the provider's own: for a request that
        forwards some of its client's headers (gateway/wire/messages.py)."""
        merged = {**self._headers, **headers}
        return f"host: {self.base.authority}\r\n".encode() + b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in merged.items()
        )

    def _target(self, path: str) -> Target:
        target = self._targets.get(path)
        if target is None:
            target = self._targets[path] = self.base.join(path)
        return target

    async def post(self, path: str, document: dict, head: bytes | None = None) -> "Posted":
        head = self._head if head is None else head
        try:
            response = await self.transport.open(
                b"POST",
                self._target(path),
                head if self.trace_headers is None else head + self.trace_headers(),
                msgspec.json.encode(document),
                connect_timeout=self.provider.connect_timeout,
                read_timeout=self.provider.timeout,
            )
            try:
                status, content = response.status, await response.read()
            finally:
                response.close()
        except UpstreamTimeout:
            raise upstream_timeout(self.provider) from None
        except UpstreamClosed as exc:
            raise upstream_unreachable(self.provider, exc) from None
        if status >= 400:
            raise upstream_error(self.provider, status, self.error_message(content), response.headers)
        return Posted(status, content)

    async def get(self, path: str, params: dict | None = None) -> bytes:
        """A GET (such as the provider's model list) on the same pool and credentials; its body, or the
        provider's error as a GatewayError."""
        target = self.base.join(path + (f"?{urlencode(params)}" if params else ""))
        try:
            status, content = await self.transport.request(
                b"GET",
                target,
                self._head,
                b"",
                connect_timeout=self.provider.connect_timeout,
                timeout=self.provider.timeout,
            )
        except UpstreamTimeout:
            raise upstream_timeout(self.provider) from None
        except UpstreamClosed as exc:
            raise upstream_unreachable(self.provider, exc) from None
        if status >= 400:
            raise upstream_error(self.provider, status, self.error_message(content))
        return content

    async def stream(
        self, path: str, document: dict, params: dict | None = None, head: bytes | None = None
    ) -> LeanResponse:
        """Open a streamed POST; the caller reads it (`lines`) and must close it (`aclose`)."""
        target = self._target(path + (f"?{urlencode(params)}" if params else ""))
        head = self._head if head is None else head
        try:
            response = await self.transport.open(
                b"POST",
                target,
                head if self.trace_headers is None else head + self.trace_headers(),
                msgspec.json.encode(document),
                connect_timeout=self.provider.connect_timeout,
                read_timeout=self.provider.timeout,
            )
            if response.status >= 400:
                content = await response.read()
                raise upstream_error(self.provider, response.status, self.error_message(content), response.headers)
        except UpstreamTimeout:
            raise upstream_timeout(self.provider) from None
        except UpstreamClosed as exc:
            raise upstream_unreachable(self.provider, exc) from None
        return response

    async def lines(self, response: LeanResponse) -> AsyncIterator[str]:
        """The lines of a streamed response; a timeout or a dropped connection mid-stream is a GatewayError."""
        async for batch in self.line_batches(response):
            for line in batch:
                yield line

    async def line_batches(self, response: LeanResponse) -> AsyncIterator[list[str]]:
        """The lines of a streamed response, as they arrived: all the complete lines of one read together
        (relayed in one write, they cost the client one wake-up instead of one per line)."""
        pending = b""
        try:
            async for chunk in response.iter_chunks():
                *complete, pending = (pending + chunk).split(b"\n")
                if complete:
                    yield [line.rstrip(b"\r").decode("utf-8", "replace") for line in complete]
        except UpstreamTimeout:
            raise upstream_timeout(self.provider) from None
        except UpstreamClosed as exc:
            raise upstream_unreachable(self.provider, exc) from None
        if pending:
            yield [pending.rstrip(b"\r").decode("utf-8", "replace")]

    def broken(self, what: str) -> GatewayError:
        """The upstream answered, but not with what its API promises."""
        return GatewayError(502, f"provider {self.provider.name} {what}", "upstream_error", "bad_upstream_response")

    async def aclose(self) -> None:
        await self.transport.aclose()
