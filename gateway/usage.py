"""Publishes UsageRecorded events to JetStream, deduplicated by trace id."""

from __future__ import annotations

import logging

import msgspec
from nats.js.client import JetStreamContext

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, usage_subject
from domain.usage import UsageRecorded

log = logging.getLogger("mesh.gateway")
_encode = msgspec.json.Encoder().encode


class UsagePublisher:
    def __init__(self, js: JetStreamContext, stream: str):
        self.js = js
        self.stream = stream

    async def publish(self, event: UsageRecorded) -> int:
        """Publish and wait for the ack; return the stream position."""
        trace = str(event.trace_id)
        ack = await self.js.publish(
            usage_subject(self.stream, event.account_id),
            _encode(event),
            stream=self.stream,
            headers={
                "Nats-Msg-Id": trace,
                HEADER_TOPIC: "usage.recorded",
                HEADER_ORIGINATOR_ID: trace,
                HEADER_ORIGINATOR_VERSION: "1",
            },
        )
        return ack.seq
