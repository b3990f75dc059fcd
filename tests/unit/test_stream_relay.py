"""How the gateway relays a stream's frames to the client (ASGI messages)."""

import asyncio

from gateway.stream_relay import relay
from gateway.providers.base import SSE_DONE


async def _frames(*pieces: bytes):
    for piece in pieces:
        yield piece


def _relayed(*pieces: bytes, gone: bool = False, billed: bool = False) -> list[tuple[bytes, bool] | str]:
    sent: list[tuple[bytes, bool] | str] = []

    async def send(message: dict) -> None:
        sent.append((message["body"], message["more_body"]))

    async def bill() -> None:
        await asyncio.sleep(0)
        sent.append("billed")

    async def run() -> None:
        left = asyncio.Event()
        if gone:
            left.set()
        await relay(_frames(*pieces), send, left, bill if billed else None)

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


def test_the_bill_is_made_durable_before_the_last_frame_leaves():
    first, last = b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\n' + SSE_DONE
    assert _relayed(first, last, billed=True) == [(first, True), "billed", (last, False)]
    assert _relayed(first, billed=True) == [(first, True), "billed", (b"", False)]


def test_a_stream_the_client_left_is_not_billed_by_the_relay():
    assert _relayed(b'data: {"a": 1}\n\n', SSE_DONE, gone=True, billed=True) == []
