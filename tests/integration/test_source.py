"""The stream source's batched direct get on a real nats-server, against a responder that answers as slowly as a
starved reader sees it: a batch that keeps arriving is read to its end however long it takes; silence fails."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import msgspec
import pytest
from nats.js.api import StreamConfig

from projections.source import StreamSource

TIMEOUT = 0.3  # seconds of silence after which a read fails


async def serve_slowly(nc, stream: str, count: int, gap: float, end: bool = True, extra: dict | None = None):
    """Answer direct gets on `stream` with `count` messages, `gap` seconds apart (with the `extra` headers), then
    the end-of-batch status."""

    async def answer(msg):
        for seq in range(1, count + 1):
            await asyncio.sleep(gap)
            headers = {"Nats-Sequence": str(seq), "Nats-Time-Stamp": "2026-12-01T06:00:00.123456789Z"}
            await nc.publish(msg.reply, b"{}", headers={**headers, "Mesh-Topic": "usage.recorded", **(extra or {})})
        if end:
            await nc.publish(msg.reply, b"", headers={"Status": "204", "Description": "EOB"})

    return await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}", cb=answer)


async def test_a_batch_that_keeps_arriving_is_read_to_its_end_past_the_timeout(nc, stream_name):
    await serve_slowly(nc, stream_name, count=6, gap=TIMEOUT / 2)
    loop = asyncio.get_running_loop()
    began = loop.time()

    messages = await StreamSource(nc, stream_name).read(1, limit=10, timeout=TIMEOUT)

    assert [m.position for m in messages] == [1, 2, 3, 4, 5, 6]
    assert messages[0].topic == "usage.recorded"
    assert loop.time() - began > 2 * TIMEOUT  # longer than the timeout, read all the same


async def test_a_stored_message_whose_headers_name_a_status_is_read_as_a_message(nc, stream_name):
    await serve_slowly(nc, stream_name, count=3, gap=0, extra={"Mesh-Status": "204", "Note": "Status: 204"})

    messages = await StreamSource(nc, stream_name).read(1, limit=10, timeout=TIMEOUT)

    assert [(m.position, m.topic, m.body) for m in messages] == [(n, "usage.recorded", b"{}") for n in (1, 2, 3)]
    assert messages[0].time == datetime(2026, 12, 1, 6, 0, 0, 123456, tzinfo=timezone.utc)


async def test_a_batch_that_goes_quiet_fails_after_the_timeout(nc, stream_name):
    await serve_slowly(nc, stream_name, count=2, gap=TIMEOUT / 3, end=False)
    loop = asyncio.get_running_loop()
    began = loop.time()

    with pytest.raises(asyncio.TimeoutError):
        await StreamSource(nc, stream_name).read(1, limit=10, timeout=TIMEOUT)

    assert TIMEOUT <= loop.time() - began < 4 * TIMEOUT


async def serve_filtered(nc, stream: str, head: int, positions: list[int], left: int):
    """A real stream of `head` messages without direct get, and a responder answering its filtered direct get with
    the messages at `positions`, then the end of the batch saying `left` more of its subjects are stored after them."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"], allow_direct=False))
    for _ in range(head):
        await js.publish(f"{stream}.usage.a", b"{}")

    async def answer(msg):
        assert msgspec.json.decode(msg.data)["next_by_subj"] == f"{stream}.agg.>"
        for seq in positions:
            headers = {"Nats-Sequence": str(seq), "Nats-Time-Stamp": "2026-12-01T06:00:00.123456789Z"}
            await nc.publish(msg.reply, b"{}", headers={**headers, "Mesh-Topic": "key.created"})
        await nc.publish(msg.reply, b"", headers={"Status": "204", "Nats-Num-Pending": str(left)})

    await nc.subscribe(f"$JS.API.DIRECT.GET.{stream}", cb=answer)


async def test_a_filtered_read_that_ends_with_none_left_covers_the_stream_to_its_head(nc, stream_name):
    await serve_filtered(nc, stream_name, head=100, positions=[3, 7], left=0)

    read = await StreamSource(nc, stream_name).read_through(1, 10, f"{stream_name}.agg.>")

    assert [m.position for m in read.messages] == [3, 7]
    assert read.through == 100 and not read.more


async def test_a_filtered_batch_the_server_cut_short_covers_only_what_it_brought(nc, stream_name):
    """A batch can end before `limit` with more of its subjects left (the server's byte limit per batch): the
    messages after the last one brought are not skipped."""
    await serve_filtered(nc, stream_name, head=100, positions=[3, 7], left=5)

    read = await StreamSource(nc, stream_name).read_through(1, 10, f"{stream_name}.agg.>")

    assert [m.position for m in read.messages] == [3, 7]
    assert read.through == 7 and read.more


@pytest.fixture
async def plain_nc(tmp_path):
    """A client of a nats-server without JetStream: the test answers the JetStream API itself."""
    import socket
    import subprocess

    import nats

    from api.embedded import NatsServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([NatsServer.binary(), "-a", "127.0.0.1", "-p", str(port)], stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                client = await nats.connect(f"nats://127.0.0.1:{port}", allow_reconnect=False)
                break
            except Exception:
                await asyncio.sleep(0.05)
        yield client
        await client.close()
    finally:
        server.terminate()
        server.wait(10)


async def test_a_replicated_stream_is_read_unfiltered_and_covered_only_as_far_as_the_answer_came(plain_nc):
    """With replicas a direct get may be answered by a follower behind the head the leader reports: a filtered
    answer ending early would skip what the follower has not received yet. The read takes every subject instead,
    and counts as read only what it brought."""
    nc, stream_name = plain_nc, "REPLICATED"
    head = {"state": {"last_seq": 100, "bytes": 0}, "config": {"num_replicas": 3}}

    async def info(msg):
        await nc.publish(msg.reply, msgspec.json.encode(head))

    async def answer(msg):  # a follower that holds messages 1 to 3 so far
        assert "next_by_subj" not in msgspec.json.decode(msg.data)
        for seq, topic in ((1, "key.created"), (2, "usage.recorded"), (3, "usage.recorded")):
            headers = {"Nats-Sequence": str(seq), "Nats-Time-Stamp": "2026-12-01T06:00:00.123456789Z"}
            await nc.publish(msg.reply, b"{}", headers={**headers, "Mesh-Topic": topic})
        await nc.publish(msg.reply, b"", headers={"Status": "204", "Nats-Num-Pending": "0"})

    await nc.subscribe(f"$JS.API.STREAM.INFO.{stream_name}", cb=info)
    await nc.subscribe(f"$JS.API.DIRECT.GET.{stream_name}", cb=answer)

    read = await StreamSource(nc, stream_name).read_through(1, 10, f"{stream_name}.agg.>")

    assert [m.position for m in read.messages] == [1, 2, 3]
    assert read.through == 3
