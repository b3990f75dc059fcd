"""The event log's stream settings on a real nats-server: how long JetStream remembers a usage event's trace id."""

from __future__ import annotations

import uuid


from api.connections import connect_nats
from api.embedded import free_port
from commands.stream import (
    DEFAULT_REPLICAS,
    DEFAULT_STREAM_MAX_BYTES,
    DUPLICATE_WINDOW,
    MIN_DEFAULT_STREAM_MAX_BYTES,
    ensure_log_stream,
    ensure_stream,
    nats_servers,
    stream_config,
)
from domain.events import usage_subject


async def test_the_log_remembers_trace_ids_for_its_duplicate_window(nc, stream_name):
    await ensure_stream(nc, stream_name)
    js = nc.jetstream()
    assert (await js.stream_info(stream_name)).config.duplicate_window == DUPLICATE_WINDOW == 30
    subject, trace_id = usage_subject(stream_name, uuid.uuid4()), str(uuid.uuid4())
    first = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": trace_id})
    again = await js.publish(subject, b"{}", headers={"Nats-Msg-Id": trace_id})
    assert again.duplicate and again.seq == first.seq
    assert (await js.stream_info(stream_name)).state.messages == 1


async def test_a_log_made_with_the_old_two_minute_window_is_brought_to_it_keeping_its_events(nc, stream_name):
    js = nc.jetstream()
    old = stream_config(stream_name)
    old.duplicate_window = 120
    await js.add_stream(old)
    await js.publish(usage_subject(stream_name, uuid.uuid4()), b"{}", headers={"Nats-Msg-Id": str(uuid.uuid4())})
    assert (await js.stream_info(stream_name)).config.duplicate_window == 120

    await ensure_stream(nc, stream_name)

    info = await js.stream_info(stream_name)
    assert info.config.duplicate_window == DUPLICATE_WINDOW
    assert info.state.messages == 1


async def test_the_logs_size_limit_is_set_and_kept_by_processes_that_do_not_say_one(nc, stream_name):
    js = nc.jetstream()
    assert await ensure_log_stream(nc, stream_name, 2 * 1024**2) == 2 * 1024**2
    assert (await js.stream_info(stream_name)).config.max_bytes == 2 * 1024**2
    await ensure_stream(nc, stream_name)  # e.g. the command side's recorder, without MESH_STREAM_MAX_BYTES
    assert (await js.stream_info(stream_name)).config.max_bytes == 2 * 1024**2
    unset = await ensure_log_stream(nc, stream_name, None)  # unset: the default, or the largest half that fits
    assert MIN_DEFAULT_STREAM_MAX_BYTES <= unset <= DEFAULT_STREAM_MAX_BYTES
    assert (await js.stream_info(stream_name)).config.max_bytes == unset
    await ensure_log_stream(nc, stream_name, 1024**2)  # the operator may lower it again; nothing is lost
    assert (await js.stream_info(stream_name)).config.max_bytes == 1024**2


async def test_a_comma_separated_list_of_servers_reaches_one_that_runs(nats_url, stream_name):
    dead = f"nats://127.0.0.1:{free_port()}"
    for listed in (f"{dead},{nats_url}", f"{nats_url} , {dead}"):
        nc = await connect_nats(listed)
        try:
            await ensure_stream(nc, stream_name, replicas=DEFAULT_REPLICAS)
            assert (await nc.jetstream().stream_info(stream_name)).config.num_replicas == 1
        finally:
            await nc.close()
    assert nats_servers(f" {dead} ,, {nats_url} ") == [dead, nats_url]


async def test_a_process_that_does_not_say_the_replicas_keeps_them(nc, stream_name):
    await ensure_stream(nc, stream_name, replicas=1)
    await ensure_stream(nc, stream_name)  # the event store's recorder, say: replicas as they are
    assert (await nc.jetstream().stream_info(stream_name)).config.num_replicas == 1
    refused = None
    try:
        await ensure_stream(nc, stream_name, replicas=3)  # one server cannot hold three
    except Exception as exc:
        refused = exc
    assert refused is not None
    assert (await nc.jetstream().stream_info(stream_name)).config.num_replicas == 1
