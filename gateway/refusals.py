"""Refused requests, counted: the gateway tells a key's owner how many of its requests it refused, and why,
without an event per refusal.

A request refused once its key is known (a bad request, the spend cap, the balance, a rate limit, a model the
key may not use) adds one to the count of its key and error code, in memory. Every `FLUSH_SECONDS` the counts
go out as one `RequestsRefused` event per key (JetStream, acknowledged); one NATS does not acknowledge is sent
again, unchanged, with the next ones, and the read model counts each `refusal_id` once. A refusal moves no
money: the counts of at most one period die with a process that is killed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime, timezone
from uuid import UUID

import msgspec
from nats.aio.client import Client as NATS

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, event_name, usage_subject
from domain.usage import RequestsRefused
from gateway.pause import stopped_within

log = logging.getLogger("mesh.gateway")

FLUSH_SECONDS = 60.0  # one event per key per this, at the most (MESH_REFUSALS_FLUSH_SECONDS)
ACK_SECONDS = 2.0  # how long a publish waits for JetStream's acknowledgement
UNKNOWN_CODE = "refused"  # the code counted for a refusal that has none
MAX_UNSENT = 10_000  # events kept for a NATS that does not answer (one per key per period)


class _Ack(msgspec.Struct):
    error: dict | None = None


class _Tally:
    __slots__ = ("refusal_id", "account_id", "since", "until", "counts")

    def __init__(self, account_id: UUID, now: datetime):
        self.refusal_id = uuid.uuid4()
        self.account_id = account_id
        self.since = self.until = now
        self.counts: dict[str, int] = {}

    def event(self, key_id: UUID) -> RequestsRefused:
        return RequestsRefused(
            refusal_id=self.refusal_id,
            account_id=self.account_id,
            key_id=key_id,
            since=self.since,
            until=self.until,
            counts=dict(self.counts),
        )


class Refusals:
    def __init__(self, nc: NATS, stream: str, flush_seconds: float = FLUSH_SECONDS):
        self.nc = nc
        self.stream = stream
        self.flush_seconds = flush_seconds
        self._tallies: dict[UUID, _Tally] = {}  # by key id: one per key that was refused since the last flush
        self._unsent: list[RequestsRefused] = []  # published without an acknowledgement: sent again

    def count(self, account_id: UUID, key_id: UUID, code: str | None) -> None:
        now = datetime.now(timezone.utc)
        tally = self._tallies.get(key_id)
        if tally is None:
            tally = self._tallies[key_id] = _Tally(account_id, now)
        tally.until = now
        code = code or UNKNOWN_CODE
        tally.counts[code] = tally.counts.get(code, 0) + 1

    async def flush(self) -> None:
        """Publish one event per key counted, and again those whose publish failed before: unchanged, under
        their own id, which the read model counts once (a publish that was in fact stored is not counted
        twice, however late the retry)."""
        pending = [*self._unsent, *(tally.event(key_id) for key_id, tally in self._tallies.items())]
        self._tallies, self._unsent = {}, []
        for sent, event in enumerate(pending):
            try:
                ack = await self.nc.request(
                    usage_subject(self.stream, event.account_id),
                    msgspec.json.encode(event),
                    timeout=ACK_SECONDS,
                    headers={
                        HEADER_TOPIC: event_name(RequestsRefused),
                        HEADER_ORIGINATOR_ID: str(event.refusal_id),
                        HEADER_ORIGINATOR_VERSION: "1",
                        "Nats-Msg-Id": str(event.refusal_id),
                    },
                )
                if msgspec.json.decode(ack.data, type=_Ack).error is not None:
                    raise RuntimeError(f"JetStream refused it: {ack.data[:200]!r}")
            except Exception as exc:  # noqa: BLE001 - disconnected or no ack: this one and the rest, next time
                log.warning(
                    "%d refusal counts kept for the next try: %s", len(pending) - sent, exc or type(exc).__name__
                )
                self._unsent = pending[sent:][-MAX_UNSENT:]  # NATS away for long: the oldest counts go first
                return

    async def run(self, stop: asyncio.Event) -> None:
        while not await stopped_within(stop, self.flush_seconds):
            await self.flush()
        await self.flush()
