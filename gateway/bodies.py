"""Publishes request and response bodies (MESH_LOG_BODIES=on) to their own stream, off the request path.

Best effort by design: bodies explain a request, they never bill it. `submit` queues and returns; a background
task publishes what has queued up (core NATS publishes, stored by the bodies stream without an ack round trip).
A body NATS cannot take is dropped with a warning, never spooled; the usage event is what must not be lost.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from uuid import UUID

import msgspec
from nats.aio.client import Client as NATS

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, bodies_subject, event_name
from domain.usage import MAX_LOGGED_BODY, BodyRecorded

log = logging.getLogger("mesh.gateway")
_encode = msgspec.json.Encoder().encode
_TOPIC = event_name(BodyRecorded)


def _cut(raw: bytes) -> tuple[str, bool]:
    return raw[:MAX_LOGGED_BODY].decode("utf-8", "replace"), len(raw) > MAX_LOGGED_BODY


class BodyPublisher:
    def __init__(self, nc: NATS, stream: str):
        self.nc = nc
        self.stream = stream
        self._queue: list[BodyRecorded] = []
        self._ready = asyncio.Event()

    def submit(
        self, trace_id: UUID, account_id: UUID, timestamp: datetime, request: bytes, response: bytes | None
    ) -> None:
        request_text, cut_request = _cut(request)
        response_text, cut_response = _cut(response) if response is not None else (None, False)
        self._queue.append(
            BodyRecorded(
                trace_id=trace_id,
                account_id=account_id,
                timestamp=timestamp,
                request=request_text,
                response=response_text,
                truncated=cut_request or cut_response,
            )
        )
        self._ready.set()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        try:
            for body in batch:
                trace = str(body.trace_id)
                await self.nc.publish(
                    bodies_subject(self.stream, body.account_id),
                    _encode(body),
                    headers={
                        HEADER_TOPIC: _TOPIC,
                        HEADER_ORIGINATOR_ID: trace,
                        HEADER_ORIGINATOR_VERSION: "1",
                    },
                )
        except Exception as exc:  # disconnected: bodies are best effort
            log.warning("dropped %d logged bodies: %s", len(batch), exc or type(exc).__name__)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish what `submit` queues until `stop`; then what is left."""
        while not stop.is_set():
            self._ready.clear()
            if not self._queue:
                try:
                    await asyncio.wait_for(self._ready.wait(), 0.5)
                except asyncio.TimeoutError:
                    continue
            await self.flush()
        await self.flush()
