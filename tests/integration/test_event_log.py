"""The event log's reader on a real nats-server: a range read batch by batch to the head (or a position), of a
subject filter, by direct get or (a replay) by consumer; one message by sequence or the last of a subject; appends
followed and heard, decoded."""

from __future__ import annotations

import asyncio
import uuid

import msgspec

from commands import event_log
from commands.stream import ensure_stream
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, aggregate_subject
from domain.events import usage_subject
from domain.usage import UsageRecorded
from tests.integration.test_projections import usage

WAIT = 5.0  # seconds a pushed event may take


async def append_usage(nc, stream: str, count: int) -> list[UsageRecorded]:
    """`count` usage events of one account on its usage subject, as the gateway stores them."""
    account_id = uuid.uuid4()
    events = [usage(account_id, 1000 + i) for i in range(count)]
    js = nc.jetstream()
    for event in events:
        headers = {HEADER_TOPIC: "usage.recorded", HEADER_ORIGINATOR_ID: str(event.trace_id)}
        await js.publish(usage_subject(stream, account_id), msgspec.json.encode(event), stream=stream, headers=headers)
    return events


async def append_other(nc, stream: str) -> int:
    """A message on an aggregate subject; its position."""
    headers = {HEADER_TOPIC: "not.an.event", HEADER_ORIGINATOR_ID: "x", HEADER_ORIGINATOR_VERSION: "1"}
    ack = await nc.jetstream().publish(aggregate_subject(stream, "x"), b"{}", stream=stream, headers=headers)
    return ack.seq


async def test_a_range_is_read_batch_by_batch_to_the_head_or_a_position(nc, stream_name, monkeypatch):
    await ensure_stream(nc, stream_name)
    events = await append_usage(nc, stream_name, 5)
    other = await append_other(nc, stream_name)
    await append_usage(nc, stream_name, 4)
    monkeypatch.setattr(event_log, "READ_BATCH", 3)

    everything = [m async for m in event_log.read(nc, stream_name, 2)]
    assert [m.position for m in everything] == list(range(2, 11))
    assert [m.position async for m in event_log.read(nc, stream_name, 2, through=7)] == list(range(2, 8))
    usage_only = [m async for m in event_log.read(nc, stream_name, 1, usage_subject(stream_name, ">"))]
    assert [m.position for m in usage_only] == [p for p in range(1, 11) if p != other]
    assert event_log.decode(usage_only[0]) == events[0]


async def test_a_replay_reads_by_consumer_what_a_direct_get_reads_and_lets_the_consumer_go(nc, stream_name):
    await ensure_stream(nc, stream_name)
    await append_usage(nc, stream_name, 5)
    other = await append_other(nc, stream_name)
    await append_usage(nc, stream_name, 4)
    usage_only = usage_subject(stream_name, ">")
    by_direct_get, _ = await event_log.read_batch(nc, stream_name, 1, 100)
    reader = event_log.RangeReader(nc, stream_name)
    try:
        first, more = await reader.read(1, 4)
        assert (first, more) == (by_direct_get[:4], True)  # every field alike, the time to the microsecond
        rest, more = await reader.read(5, 100)  # from where the last read stopped: the same consumer goes on
        assert (rest, more) == (by_direct_get[4:], False)
        assert await consumers(nc, stream_name) == 1
        again, more = await reader.read(2, 2)  # from elsewhere: a new consumer from there
        assert (again, more) == (by_direct_get[1:3], True)
        assert await consumers(nc, stream_name) == 1
        assert await reader.read(11, 5) == ([], False)  # nothing after the head
        first, more = await reader.read(1, 4)
        (name,) = [c.name for c in await nc.jetstream().consumers_info(stream_name)]
        await nc.jetstream().delete_consumer(stream_name, name)  # as a lost node loses it
        assert await reader.read(5, 4, timeout=1) == (by_direct_get[4:8], True)  # read on by a new consumer
        assert [c.name for c in await nc.jetstream().consumers_info(stream_name)] != [name]
    finally:
        await reader.close()
    assert await consumers(nc, stream_name) == 0
    filtered = event_log.RangeReader(nc, stream_name, usage_only)
    try:
        usage_messages, more = await filtered.read(3, 100)
        assert [m.position for m in usage_messages] == [p for p in range(3, 11) if p != other] and not more
    finally:
        await filtered.close()


async def consumers(nc, stream: str) -> int:
    return (await nc.jetstream().stream_info(stream)).state.consumer_count


async def test_one_message_by_sequence_or_the_last_of_a_subject(nc, stream_name):
    await ensure_stream(nc, stream_name)
    events = await append_usage(nc, stream_name, 3)
    other = await append_other(nc, stream_name)

    at_two = await event_log.get(nc, stream_name, seq=2)
    assert at_two is not None and event_log.decode(event_log.stored_message(at_two)) == events[1]
    last = await event_log.get(nc, stream_name, last_by_subject=aggregate_subject(stream_name, ">"))
    assert last is not None and event_log.stored_message(last).position == other
    assert await event_log.get(nc, stream_name, seq=other + 1) is None
    assert await event_log.head(nc, stream_name) == other


async def test_appends_are_followed_from_a_position_and_heard_decoded(nc, stream_name):
    await ensure_stream(nc, stream_name)
    before = await append_usage(nc, stream_name, 2)
    heard: list[UsageRecorded] = []
    arrived = asyncio.Event()

    def hear(event: UsageRecorded) -> None:
        heard.append(event)
        arrived.set()

    sub = await event_log.listen(nc, usage_subject(stream_name, ">"), {UsageRecorded: hear})
    followed = event_log.follow(nc, stream_name, 2, [usage_subject(stream_name, ">")], idle=WAIT)
    try:
        first = await asyncio.wait_for(anext(followed), WAIT)
        assert first is not None and (first.position, first.event) == (2, before[1])
        await append_other(nc, stream_name)  # not on the subjects followed, nor an event
        after = await append_usage(nc, stream_name, 1)
        then = await asyncio.wait_for(anext(followed), WAIT)
        assert then is not None and (then.position, then.name, then.event) == (4, "usage.recorded", after[0])
        await asyncio.wait_for(arrived.wait(), WAIT)
        assert heard == after  # heard from the subscription on: nothing before it
        stored, _ = await event_log.read_batch(nc, stream_name, 1, 10)
        assert (first.time, then.time) == (stored[1].time, stored[3].time)  # to the microsecond, as a read has it
    finally:
        await followed.aclose()
        await sub.unsubscribe()


async def test_each_append_is_noticed_once_with_no_message_built_for_it(nc, stream_name):
    """A notice is called as the client parses the append (no nats-py message, pending queue or callback task: under
    load a notice comes with every usage event); a direct get on the same client still reads the messages."""
    await ensure_stream(nc, stream_name)
    noticed = 0
    all_noticed = asyncio.Event()

    def notice() -> None:
        nonlocal noticed
        noticed += 1
        if noticed == 20:
            all_noticed.set()

    sub = await event_log.on_append(nc, usage_subject(stream_name, ">"), notice)
    built = nc.stats["in_msgs"]  # what nats-py made into messages
    try:
        await append_usage(nc, stream_name, 20)
        await asyncio.wait_for(all_noticed.wait(), WAIT)
        await asyncio.sleep(0.05)  # nothing more arrives
        assert noticed == 20 and sub.pending_msgs == 0
        assert nc.stats["in_msgs"] - built == 20  # the publishes' acks, not the notices
        messages, _ = await event_log.read_batch(nc, stream_name, 1, 100)
        assert len(messages) == 20 and noticed == 20
    finally:
        await sub.unsubscribe()
