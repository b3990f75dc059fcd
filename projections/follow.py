"""Follows the event log from a position to its head and on, pushed by JetStream: no polling.

An ordered consumer (ephemeral, in memory on the server, flow-controlled, no acks) delivers the stream's messages
in order from a start sequence, filtered by subject; the client library re-creates it from the last sequence it
delivered when it notices a gap or a lost consumer (a NATS restart, a failover), so nothing is skipped or repeated.
Each message is handed over decoded into its registered event class (domain/events.py).
"""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, UnknownEvent, decode_event

log = logging.getLogger("mesh.projections")

PENDING_MESSAGES = 2048  # delivered and not yet taken by the follower: JetStream's flow control holds the rest
HEARTBEAT_FLOOR = 0.5  # the consumer's own idle heartbeat, in seconds, at least (it tells a lost consumer)


class Followed(msgspec.Struct, frozen=True):
    position: int  # stream sequence
    time: Any  # datetime: when JetStream stored it
    name: str  # the registered event name
    aggregate_id: str  # Mesh-Originator-Id
    version: int  # Mesh-Originator-Version
    event: Any  # the decoded event, an instance of its registered class


async def follow(nc: NATS, stream: str, start: int, subjects: list[str], idle: float) -> AsyncIterator[Followed | None]:
    """The events on `subjects` from stream sequence `start` (at least 1) on, for as long as the caller iterates;
    None after each `idle` seconds without one (a caller's heartbeat). Messages that do not decode (an event this
    version does not know) are logged and skipped."""
    js = nc.jetstream()
    config = ConsumerConfig(opt_start_seq=max(start, 1), filter_subjects=subjects if len(subjects) > 1 else None)
    sub = await js.subscribe(
        subjects[0],
        stream=stream,
        config=config,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        idle_heartbeat=max(HEARTBEAT_FLOOR, min(idle, 5.0)),
        pending_msgs_limit=PENDING_MESSAGES,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=idle)
            except NatsTimeout:
                yield None
                continue
            followed = _decoded(msg)
            if followed is not None:
                yield followed
    finally:
        try:
            await sub.unsubscribe()
        except Exception:  # the connection is gone: so is the ephemeral consumer
            log.debug("unsubscribing a follower failed", exc_info=True)


def _decoded(msg: Any) -> Followed | None:
    headers = msg.headers or {}
    name = headers.get(HEADER_TOPIC, "")
    aggregate_id = headers.get(HEADER_ORIGINATOR_ID, "")
    version = int(headers.get(HEADER_ORIGINATOR_VERSION) or 0)
    meta = msg.metadata
    try:
        event = decode_event(name, msg.data, aggregate_id, version)
    except (UnknownEvent, msgspec.DecodeError, msgspec.ValidationError, ValueError):
        log.warning("skipping an undecodable %r event at position %d", name, meta.sequence.stream)
        return None
    return Followed(meta.sequence.stream, meta.timestamp, name, aggregate_id, version, event)
