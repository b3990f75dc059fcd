"""How the gateway relays a stream's frames to the client (ASGI messages)."""

import asyncio

from gateway.app import relay
from gateway.providers.base import SSE_DONE


async def _frames(*pieces: bytes):
    for piece in pieces:
        yield piece


def _relayed(*pieces: bytes, gone: bool = False) -> list[tuple[bytes, bool]]:
    sent: list[tuple[bytes, bool]] = []

    async def send(message: dict) -> None:
        sent.append((message["body"], message["more_body"]))

    async def run() -> None:
        left = asyncio.Event()
        if gone:
            left.set()
        await relay(_frames(*pieces), send, left)

    asyncio.run(run())
    return sent


def test_the_done_frame_goes_out_with_the_end_of_the_response():
    first, last = b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n' + SSE_DONE
    assert _relayed(first, last) == [(first, True), (last, False)]


def test_a_stream_without_done_still_ends_the_response():
    first = b'data: {"a": 1}\n\n'
    assert _relayed(first) == [(first, True), (b"", False)]


def test_nothing_is_sent_once_the_client_is_gone():
    assert _relayed(b'data: {"a": 1}\n\n', SSE_DONE, gone=True) == []
