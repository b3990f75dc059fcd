"""Publishes UsageRecorded events to JetStream, deduplicated by trace id, and never loses one.

Durable before answered: the gateway hands an event over with `submit` and awaits what it returns before the
last byte of the answer leaves. A background task (`run`) publishes what has queued up in one go and waits for
all their acks together (one timer, one wait): a group commit, so requests finishing together share one round
trip instead of paying one each. `publish` does the same for one event.

When NATS cannot take an event (disconnected, or no ack in time), it goes to a local spool file (fsynced)
before its request is told it is stored, and is replayed once NATS is back. A replayed event keeps its trace id
as `Nats-Msg-Id`, and the billing read model counts a trace id once, so a spooled event that had in fact been
stored is not billed twice.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, event_name, usage_subject
from domain.usage import UsageRecorded

log = logging.getLogger("mesh.gateway")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(UsageRecorded).decode

ACK_TIMEOUT = 2.0
MAX_BATCH = 512  # events in flight at once


class _Ack(msgspec.Struct):
    seq: int = 0
    error: dict | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class NotStored(Exception):
    """JetStream refused the event, or did not acknowledge it in time."""


class UsagePublisher:
    def __init__(self, nc: NATS, stream: str, spool: Path):
        self.nc = nc
        self.stream = stream
        self.spool = spool
        self._lock = asyncio.Lock()
        self._queue: list[tuple[UsageRecorded, asyncio.Future]] = []  # each event and who waits for it
        self._closed = False  # `run` has returned: `submit` stores on its own
        self._late: set[asyncio.Task] = set()  # what it stores on its own (held: the loop keeps only weak refs)
        self._waiter: asyncio.Future | None = None  # `run` sleeps on it when there is nothing to do
        self._acks: dict[str, tuple[_Batch, int]] = {}  # reply token -> its batch and place in it
        self._tokens = itertools.count()
        self._inbox: str | None = None

    def submit(self, event: UsageRecorded) -> asyncio.Future:
        """Queue an event for the next batch. The future resolves once the event is stored (acknowledged by
        JetStream, or in the fsynced spool), or fails with NotStored when neither could take it."""
        stored = asyncio.get_running_loop().create_future()
        self._queue.append((event, stored))
        if self._closed:
            self._store_late()
        else:
            self._wake()
        return stored

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def publish(self, event: UsageRecorded) -> None:
        """Publish one event now and wait until JetStream (or, failing that, the spool) has it."""
        (result,) = await self._publish([event])
        if result is not None:
            raise result

    async def _publish(self, events: list[UsageRecorded]) -> list[NotStored | None]:
        """Store the events: in JetStream, or what it does not take in the spool. Per event: None (stored) or
        why it is in neither."""
        datas = [_encode(event) for event in events]
        if not self.nc.is_connected:
            results: list = [NotStored("NATS is not connected")] * len(events)
        else:
            try:
                results = await self._send(events, datas)
            except Exception as exc:  # e.g. the connection dropped while sending
                results = [exc] * len(events)
        failed = [i for i, result in enumerate(results) if result is not None]
        if not failed:
            return results
        log.warning("%d usage events not acknowledged (%s); spooled", len(failed), results[failed[0]])
        try:
            await self._to_spool([datas[i] for i in failed])
        except OSError as exc:
            log.error("%d usage events are neither in JetStream nor in the spool %s: %s", len(failed), self.spool, exc)
            return [
                None if result is None else NotStored(f"not acknowledged ({result}) and not spooled ({exc})")
                for result in results
            ]
        return [None] * len(events)

    async def _store_queued(self) -> None:
        """Store the next batch of what `submit` queued, then tell each waiting request."""
        queued, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        if not queued:
            return
        try:
            results = await self._publish([event for event, _ in queued])
        except Exception as exc:  # a defect: tell the requests, keep the publisher going
            log.exception("storing %d usage events failed", len(queued))
            results = [NotStored(f"storing failed ({type(exc).__name__}: {exc})")] * len(queued)
        except BaseException as exc:  # cancelled (a stop that took too long): nobody may wait forever
            _tell(queued, [NotStored(f"the usage publisher stopped ({type(exc).__name__})")] * len(queued))
            raise
        _tell(queued, results)

    async def _send(self, events: list[UsageRecorded], datas: list[bytes]) -> list[Exception | None]:
        """Publish with a reply subject each; wait for all acks at once. Per event: None (stored) or why not."""
        if self._inbox is None:
            self._inbox = self.nc.new_inbox()
            await self.nc.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        batch = _Batch(len(events))
        tokens = []
        timer = asyncio.get_running_loop().call_later(ACK_TIMEOUT, batch.expire)
        try:
            for i, (event, data) in enumerate(zip(events, datas)):
                token = str(next(self._tokens))
                self._acks[token] = (batch, i)
                tokens.append(token)
                await self._write(_frame(self.stream, event, data, f"{self._inbox}.{token}"))
            await self._flush()
            await batch.done
        finally:
            timer.cancel()
            for token in tokens:
                self._acks.pop(token, None)
        return batch.results

    async def _write(self, frame: bytes) -> None:
        """Queue a ready-made HPUB frame on the connection, as nats-py's `publish` does once it has built one
        (its `_send_command`; `_flush_pending` then wakes its flusher).

        `publish` validates and encodes each header of each message in Python, for every usage event on the
        busiest path. Every part of a usage frame is ours (fixed header names, UUIDs, a subject
        made of a UUID), so none needs those checks. tests/integration/test_usage_publisher.py reads a stored
        event back, headers and body, so a nats-py that changed these internals fails there."""
        await self.nc._send_command(frame)

    async def _flush(self) -> None:
        await self.nc._flush_pending()

    async def _on_ack(self, msg: Msg) -> None:
        waiting = self._acks.pop(msg.subject.rsplit(".", 1)[-1], None)
        if waiting is None:
            return  # late: its batch timed out and was spooled
        batch, i = waiting
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError:
            return batch.answer(i, NotStored(f"unreadable ack {msg.data[:100]!r}"))
        if ack.error is not None:
            return batch.answer(i, NotStored(str(ack.error.get("description") or ack.error)))
        batch.answer(i, None)

    async def _to_spool(self, datas: list[bytes]) -> None:
        async with self._lock:
            await asyncio.to_thread(_append, self.spool, datas)

    @property
    def spooled(self) -> bool:
        return self.spool.exists() and self.spool.stat().st_size > 0

    @property
    def queued(self) -> int:
        """Usage events waiting in memory for their turn to be sent."""
        return len(self._queue)

    def spool_depth(self) -> int:
        """Usage events in the spool, waiting for JetStream to take them (reads the file: not for the hot path)."""
        try:
            with self.spool.open("rb") as spool:
                return sum(1 for line in spool if line.strip())
        except FileNotFoundError:
            return 0

    async def replay(self) -> int:
        """Publish what the spool holds, oldest first; keep what still fails. Returns how many went out."""
        async with self._lock:
            if not self.spooled or not self.nc.is_connected:
                return 0
            lines = [line for line in self.spool.read_bytes().splitlines() if line.strip()]
            sent = 0
            while sent < len(lines):
                chunk = lines[sent : sent + MAX_BATCH]
                events, readable = [], []
                for line in chunk:
                    try:
                        events.append(_decode(line))
                        readable.append(line)
                    except msgspec.DecodeError:
                        log.error("dropping an unreadable spool line: %r", line[:200])
                try:
                    results = await self._send(events, readable)
                except Exception:
                    break
                if any(result is not None for result in results):
                    break  # NATS is still not taking them: keep the chunk for the next try
                sent += len(chunk)
            await asyncio.to_thread(_rewrite, self.spool, lines[sent:])
            if sent:
                log.warning("replayed %d spooled usage events; %d left", sent, len(lines) - sent)
            return sent

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Send what `submit` queued, as it comes; replay the spool every `interval` seconds. On `stop`,
        send what is still queued, then return."""
        loop = asyncio.get_running_loop()
        next_replay = loop.time() + interval
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake())
        try:
            while True:
                if self._queue:
                    await self._store_queued()
                    continue
                if stop.is_set():
                    return
                if loop.time() >= next_replay:
                    next_replay = loop.time() + interval
                    try:
                        await self.replay()
                    except Exception:
                        log.exception("replaying the usage spool failed; will retry")
                    continue
                self._waiter = loop.create_future()
                alarm = loop.call_at(next_replay, self._wake)
                try:
                    await self._waiter
                finally:
                    alarm.cancel()
                    self._waiter = None
        finally:
            stopping.cancel()
            self._closed = True
            if self._queue:  # left by a cancellation
                self._store_late()

    def _store_late(self) -> None:
        task = asyncio.ensure_future(self._store_queued())
        self._late.add(task)
        task.add_done_callback(self._late.discard)


class _Batch:
    """The acks one `_send` waits for: one future for all of them, resolved by the last."""

    def __init__(self, size: int):
        self.results: list[Exception | None] = [NotStored("no ack in time")] * size
        self.missing = size
        self.done = asyncio.get_running_loop().create_future()
        if not size:
            self.done.set_result(None)

    def answer(self, i: int, result: Exception | None) -> None:
        self.results[i] = result
        self.missing -= 1
        if self.missing == 0 and not self.done.done():
            self.done.set_result(None)

    def expire(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


_USAGE_HEADERS = (
    f"NATS/1.0\r\n{HEADER_TOPIC}: {event_name(UsageRecorded)}\r\n{HEADER_ORIGINATOR_VERSION}: 1\r\n"
    f"Nats-Msg-Id: %s\r\n{HEADER_ORIGINATOR_ID}: %s\r\n\r\n"
).encode()


def _frame(stream: str, event: UsageRecorded, data: bytes, reply: str) -> bytes:
    """The NATS protocol frame publishing `event`: deduplicated by its trace id (`Nats-Msg-Id`), which is also its
    originator id."""
    trace = str(event.trace_id).encode()
    headers = _USAGE_HEADERS % (trace, trace)
    subject = usage_subject(stream, event.account_id)
    return b"HPUB %s %s %d %d\r\n%s%s\r\n" % (
        subject.encode(),
        reply.encode(),
        len(headers),
        len(headers) + len(data),
        headers,
        data,
    )


def _tell(queued: list[tuple[UsageRecorded, asyncio.Future]], results: list[NotStored | None]) -> None:
    for (_, stored), result in zip(queued, results):
        if not stored.done():  # (a request cancelled meanwhile no longer waits)
            if result is None:
                stored.set_result(None)
            else:
                stored.set_exception(result)


def _append(path: Path, datas: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as spool:
        spool.write(b"".join(data + b"\n" for data in datas))
        spool.flush()
        os.fsync(spool.fileno())


def _rewrite(path: Path, lines: list[bytes]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as spool:
        spool.write(b"".join(line + b"\n" for line in lines))
        spool.flush()
        os.fsync(spool.fileno())
    os.replace(tmp, path)
