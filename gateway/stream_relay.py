"""Relaying a streamed answer to its client: the frames as they come, what is left after the client has gone,
and the copy kept for the request log."""

from __future__ import annotations

import asyncio
from typing import AsyncIterable, Awaitable, Callable

from domain.usage import MAX_LOGGED_BODY
from gateway.asgi import Receive, Send
from gateway.errors import GatewayError
from gateway.providers.base import SSE_DONE, StreamReply


async def relay(
    frames: AsyncIterable[bytes],
    send: Send,
    gone: asyncio.Event,
    last: Callable[[], Awaitable[None]] | None = None,
    reply: StreamReply | None = None,
) -> None:
    """Send a stream's frames as they come, until it ends or the client is gone. The last frame ([DONE], or the
    one `reply` has `ended` at, for a wire format without [DONE]) goes out with the end of the response: one
    write, not two; `last` runs just before it (the gateway makes the stream's bill durable there)."""
    async for frame in frames:
        if gone.is_set():
            return
        ended = frame.endswith(SSE_DONE) or (reply is not None and reply.ended)
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


async def recording(frames: AsyncIterable[bytes], into: list[bytes]) -> AsyncIterable[bytes]:
    """The frames as they pass, kept in `into` (the logged response body) up to one byte past MAX_LOGGED_BODY:
    all the log keeps, and enough to know it was cut, however long the stream runs."""
    kept = 0
    async for frame in frames:
        if kept <= MAX_LOGGED_BODY:
            into.append(frame[: MAX_LOGGED_BODY + 1 - kept])
            kept += len(into[-1])
        yield frame


async def watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return
