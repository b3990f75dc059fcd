"""The two stream loops of the provider adapters: a provider's own stream events translated to OpenAI chunks
(`translated_stream`, Anthropic and Gemini), and an upstream's lines relayed one by one (`relayed_stream`, OpenAI
kinds and Anthropic's Messages passed through); both settle the stream's usage when it ends."""

from __future__ import annotations

import time
import uuid
from typing import AsyncIterator, Callable, Protocol

import msgspec

from gateway.answer_fields import cost_fields
from gateway.errors import GatewayError
from gateway.providers.base import SSE_DONE, StreamReply, Upstream, Usage, sse
from gateway.transport import LeanResponse


class StreamTranslation(Protocol):
    """How one provider's stream events read as OpenAI chunks (gateway/providers/anthropic.py, gemini.py)."""

    finished: bool  # the upstream said the answer is complete: its usage is final
    stopped: bool  # the upstream's stream is over: no later line is read

    def read(self, event: dict, reply: StreamReply) -> list[dict]:
        """The chunk `choices` one `data:` event becomes (marking the reply's first token when it has one)."""
        ...

    def usage(self) -> Usage:
        """The usage so far: final once `finished`, else an estimate, flagged."""
        ...


def translated_stream(
    upstream: "Upstream",
    response: LeanResponse,
    sent_ns: int,
    model_id: str,
    translation: StreamTranslation,
    include_usage: bool,
    incomplete: str,
) -> StreamReply:
    """The one loop of every provider whose stream is translated into OpenAI chunks: each `data:` event read by
    `translation` into chunks; an event that is not JSON, or a stream that ends before the answer is complete
    (`incomplete` says how), a 502; then the usage chunk (when the client asked for it) and [DONE]; and however it
    ends, the usage settled and the upstream response closed."""
    base = {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model_id,
    }
    reply: StreamReply

    async def frames() -> AsyncIterator[bytes]:
        try:
            try:
                async for line in upstream.lines(response):
                    if not line.startswith("data:"):  # `event:` lines repeat the type the data carries
                        continue
                    for choice in translation.read(msgspec.json.decode(line[5:].strip()), reply):
                        yield sse(msgspec.json.encode({**base, "choices": [choice]}))
                    if translation.stopped:
                        break
            except msgspec.DecodeError:
                raise upstream.broken("sent a stream event that is not JSON") from None
            if not translation.finished:
                raise upstream.broken(incomplete)
            reply.usage = translation.usage()
            if include_usage:
                yield usage_chunk(base, reply.usage, reply.cost())
            yield SSE_DONE
        finally:
            reply.usage = translation.usage()
            reply.mark_done()
            await response.aclose()

    reply = StreamReply(frames(), sent_ns)
    return reply


def relayed_stream(
    upstream: "Upstream",
    response: LeanResponse,
    sent_ns: int,
    frame: Callable[[str, StreamReply], bytes | None],
    at_end: Callable[[], bytes | None],
    settle: Callable[[StreamReply], None],
) -> StreamReply:
    """The one loop of every stream relayed in its upstream's own wire format (OpenAI's chat chunks to a chat client,
    Anthropic's events to a Messages client): each line becomes what `frame` returns (None: nothing); the frames of
    the lines that arrived together go out together; a line that fails the stream (a GatewayError from `frame`)
    first lets out what came before it; `frame` sets `reply.ended` on the stream's last line. A stream that ends
    without it gets what `at_end` returns (or raises). `settle` sets the usage before the last frame and again
    however the stream ends, when the upstream response is closed."""
    reply: StreamReply

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for lines in upstream.line_batches(response):
                out: list[bytes] = []
                for line in lines:
                    try:
                        relayed = frame(line, reply)
                    except GatewayError:  # what arrived before the failure still reaches the client
                        if out:
                            yield b"".join(out)
                        raise
                    if relayed is not None:
                        out.append(relayed)
                    if reply.ended:
                        break
                if reply.ended:  # the usage settled before the last frame, for a front door that re-encodes it
                    settle(reply)
                if out:
                    yield b"".join(out)
                if reply.ended:
                    return
            last = at_end()
            if last is not None:
                reply.ended = True
                settle(reply)
                yield last
        finally:
            reply.mark_done()
            settle(reply)
            await response.aclose()

    reply = StreamReply(frames(), sent_ns)
    return reply


def usage_chunk(base: dict, usage: Usage, cost: int | None = None) -> bytes:
    """The final OpenAI stream chunk with usage (sent only to clients that asked for it), and its cost when known."""
    counted = usage.openai() if cost is None else {**usage.openai(), **cost_fields(cost)}
    return sse(msgspec.json.encode({**base, "choices": [], "usage": counted}))
