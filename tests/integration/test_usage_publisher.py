"""The usage publisher on a real nats-server: batches acknowledged together, refusals spooled, spool replayed;
a request is told its event is stored only once it is (acknowledged, or fsynced in the spool)."""

from __future__ import annotations

import asyncio
import os
import uuid

import msgspec
import nats
import pytest

from commands.stream import ensure_stream
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, usage_subject
from domain.usage import UsageRecorded
from gateway.usage import NotStored, UsagePublisher
from tests.integration.test_projections import usage


async def stored(nc, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.messages


async def test_a_burst_is_stored_once_per_trace_id_and_nothing_is_spooled(nc, stream_name, tmp_path):
    await ensure_stream(nc, stream_name)
    publisher = UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    stop = asyncio.Event()
    running = asyncio.create_task(publisher.run(stop))
    account = uuid.uuid4()
    events = [usage(account, i) for i in range(300)]
    for event in events:
        publisher.submit(event)
    for event in events[:50]:  # the same trace ids again: JetStream drops them (Nats-Msg-Id)
        publisher.submit(event)
    stop.set()
    await asyncio.wait_for(running, 10)
    assert await stored(nc, stream_name) == 300
    assert not publisher.spooled


async def test_a_stored_event_carries_the_streams_headers_and_its_body(nc, stream_name, tmp_path):
    await ensure_stream(nc, stream_name)
    publisher = UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    event = usage(uuid.uuid4(), 1)
    await publisher.publish(event)
    msg = await nc.jetstream().get_last_msg(stream_name, usage_subject(stream_name, event.account_id))
    assert msg.headers == {
        "Nats-Msg-Id": str(event.trace_id),
        HEADER_TOPIC: "usage.recorded",
        HEADER_ORIGINATOR_ID: str(event.trace_id),
        HEADER_ORIGINATOR_VERSION: "1",
    }
    assert msgspec.json.decode(msg.data, type=UsageRecorded) == event


async def test_events_jetstream_does_not_take_are_spooled_then_replayed(nc, stream_name, tmp_path):
    publisher = UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    account = uuid.uuid4()
    events = [usage(account, i) for i in range(5)]
    await publisher._publish(events)  # no stream yet: NATS answers "no responders", not an ack
    assert publisher.spooled
    assert len((tmp_path / "spool.jsonl").read_bytes().splitlines()) == 5

    await ensure_stream(nc, stream_name)
    assert await publisher.replay() == 5
    assert not publisher.spooled
    assert await stored(nc, stream_name) == 5
    assert await publisher.replay() == 0


class CountingPublisher(UsagePublisher):
    """Counts the ack waits (`_send` calls) and how many events each carried."""

    def __init__(self, *args):
        super().__init__(*args)
        self.sends: list[int] = []

    async def _send(self, events, datas):
        self.sends.append(len(events))
        return await super()._send(events, datas)


async def test_requests_finishing_together_share_one_ack_wait_and_are_stored_when_told(nc, stream_name, tmp_path):
    await ensure_stream(nc, stream_name)
    publisher = CountingPublisher(nc, stream_name, tmp_path / "spool.jsonl")
    stop = asyncio.Event()
    running = asyncio.create_task(publisher.run(stop))
    await asyncio.sleep(0.05)  # the publisher is idle, waiting for work
    account = uuid.uuid4()
    first = [publisher.submit(usage(account, i)) for i in range(100)]  # 100 requests ending in the same moment
    assert not any(future.done() for future in first)  # nothing is stored yet, so nobody may answer yet
    await asyncio.gather(*first)
    assert await stored(nc, stream_name) == 100  # told "stored": it is in the stream
    assert publisher.sends == [100]  # one batch, one ack wait

    second = [publisher.submit(usage(account, i)) for i in range(100, 130)]
    await asyncio.gather(*second)
    assert await stored(nc, stream_name) == 130
    assert publisher.sends == [100, 30]
    assert not publisher.spooled
    stop.set()
    await asyncio.wait_for(running, 10)


async def test_with_nats_down_an_event_is_in_the_fsynced_spool_before_its_request_is_told(
    nats_url, stream_name, tmp_path, monkeypatch
):
    down = await nats.connect(nats_url)
    await down.close()  # the gateway's connection is gone
    spool = tmp_path / "spool.jsonl"
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(len(spool.read_bytes().splitlines()))  # lines on disk when fsync returned

    monkeypatch.setattr("gateway.usage.os.fsync", fsync)
    publisher = CountingPublisher(down, stream_name, spool)
    stop = asyncio.Event()
    running = asyncio.create_task(publisher.run(stop, interval=60))
    account = uuid.uuid4()
    futures = [publisher.submit(usage(account, i)) for i in range(7)]
    await asyncio.wait_for(asyncio.gather(*futures), 5)
    assert synced == [7]  # one fsync for the batch, with all seven lines in it, before anyone was told
    assert publisher.sends == []  # no NATS round trip was tried
    lines = spool.read_bytes().splitlines()
    assert sorted(msgspec.json.decode(line)["cost"] for line in lines) == list(range(7))
    stop.set()
    await asyncio.wait_for(running, 10)


async def test_an_event_neither_nats_nor_the_spool_takes_fails_its_request(nats_url, stream_name, tmp_path):
    down = await nats.connect(nats_url)
    await down.close()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the spool's directory should be")
    publisher = UsagePublisher(down, stream_name, blocker / "spool.jsonl")
    stop = asyncio.Event()
    running = asyncio.create_task(publisher.run(stop, interval=60))
    with pytest.raises(NotStored, match="not spooled"):
        await asyncio.wait_for(publisher.submit(usage(uuid.uuid4(), 1)), 5)
    stop.set()
    await asyncio.wait_for(running, 10)  # the publisher itself goes on


async def test_after_the_publisher_stopped_a_late_event_is_still_stored(nc, stream_name, tmp_path):
    await ensure_stream(nc, stream_name)
    publisher = UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    stop = asyncio.Event()
    stop.set()
    await publisher.run(stop)
    await asyncio.wait_for(publisher.submit(usage(uuid.uuid4(), 1)), 5)  # a request still finishing at shutdown
    assert await stored(nc, stream_name) == 1
