"""Publishes UsageRecorded events to JetStream, deduplicated by trace id, and never loses one.

When NATS cannot take an event (disconnected, or no ack in time), it goes to a
local spool file (fsynced), which is replayed once NATS is back. A replayed
event keeps its trace id as `Nats-Msg-Id`, and the billing read model counts a
trace id once, so a spooled event that had in fact been stored is not billed twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, usage_subject
from domain.usage import UsageRecorded

log = logging.getLogger("mesh.gateway")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(UsageRecorded).decode

ACK_TIMEOUT = 2.0


class UsagePublisher:
    def __init__(self, nc: NATS, stream: str, spool: Path):
        self.nc = nc
        self.js = nc.jetstream()
        self.stream = stream
        self.spool = spool
        self._lock = asyncio.Lock()

    async def publish(self, event: UsageRecorded) -> None:
        data = _encode(event)
        if not self.nc.is_connected:
            return await self._to_spool(data)
        try:
            await self._send(event, data)
        except Exception as exc:  # no ack: maybe stored, maybe not; the spool replays it under the same id
            log.warning("usage event %s not acknowledged (%s); spooled", event.trace_id, type(exc).__name__)
            await self._to_spool(data)

    async def _send(self, event: UsageRecorded, data: bytes) -> None:
        trace = str(event.trace_id)
        await self.js.publish(
            usage_subject(self.stream, event.account_id), data, stream=self.stream, timeout=ACK_TIMEOUT,
            headers={"Nats-Msg-Id": trace, HEADER_TOPIC: "usage.recorded", HEADER_ORIGINATOR_ID: trace,
                     HEADER_ORIGINATOR_VERSION: "1"},
        )

    async def _to_spool(self, data: bytes) -> None:
        async with self._lock:
            await asyncio.to_thread(_append, self.spool, data)

    @property
    def spooled(self) -> bool:
        return self.spool.exists() and self.spool.stat().st_size > 0

    async def replay(self) -> int:
        """Publish what the spool holds, oldest first; keep what still fails. Returns how many went out."""
        async with self._lock:
            if not self.spooled or not self.nc.is_connected:
                return 0
            lines = [line for line in self.spool.read_bytes().splitlines() if line.strip()]
            sent = 0
            for line in lines:
                try:
                    await self._send(_decode(line), line)
                except msgspec.DecodeError:
                    log.error("dropping an unreadable spool line: %r", line[:200])
                except Exception:
                    break
                sent += 1
            await asyncio.to_thread(_rewrite, self.spool, lines[sent:])
            if sent:
                log.warning("replayed %d spooled usage events; %d left", sent, len(lines) - sent)
            return sent

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except asyncio.TimeoutError:
                pass
            try:
                await self.replay()
            except Exception:
                log.exception("replaying the usage spool failed; will retry")


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as spool:
        spool.write(data + b"\n")
        spool.flush()
        os.fsync(spool.fileno())


def _rewrite(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as spool:
        spool.write(b"".join(line + b"\n" for line in lines))
        spool.flush()
        os.fsync(spool.fileno())
    os.replace(tmp, path)
