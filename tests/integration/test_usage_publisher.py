"""The usage publisher on a real nats-server: batches acknowledged together, refusals spooled, spool replayed."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from commands.stream import ensure_stream
from gateway.usage import UsagePublisher
from tests.integration.test_projections import usage


@pytest.fixture
async def nc(nats_url):
    client = await nats.connect(nats_url)
    yield client
    await client.close()


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
