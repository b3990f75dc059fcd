"""The JetStream aggregate recorder: appends an aggregate's events with optimistic concurrency, and reads them
back (see commands/eventstore.py for the design)."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import CancelledError as FutureCancelled
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, AsyncGenerator, Coroutine, Sequence, TypeVar
from uuid import UUID

import msgspec
import nats
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    Notification,
    OperationalError,
    StoredEvent,
)
from nats.aio.msg import Msg

from commands import event_log
from commands.event_log import ReadFailed, StoredMessage
from commands.stream import ensure_stream, nats_servers
from domain.events import (
    HEADER_ORIGINATOR_ID,
    HEADER_ORIGINATOR_VERSION,
    HEADER_TOPIC,
    aggregate_subject,
)

T = TypeVar("T")
log = logging.getLogger("mesh.eventstore")

# JetStream's answers that another writer got there first: the subject's last sequence is not the one expected
# (10071, 10164), or, on a replicated stream, another append with the same message id (the same aggregate version)
# is being stored (10158; ours was not).
CONFLICTS = (10071, 10164, 10158)
TIMEOUT = 10.0


class _LoopThread:
    """A private asyncio loop in a daemon thread; `run` calls a coroutine on it from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="jetstream-recorder", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = TIMEOUT * 3) -> T:
        if not self.thread.is_alive():
            coro.close()
            raise OperationalError("the event store is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise OperationalError("NATS did not answer in time") from None
        except FutureCancelled:
            raise OperationalError("the event store was closed during the call") from None

    def stop(self) -> None:
        """Cancel what other threads still wait for (they get OperationalError at once, not after the
        timeout), then end the loop."""
        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_cancel_others(), self.loop).result(5)
            except Exception:
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


async def _cancel_others() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _log_nats_error(exc: Exception) -> None:
    log.debug("NATS: %s", exc or type(exc).__name__)


def _originator_id(value: str) -> UUID | str:
    try:
        return UUID(value)
    except ValueError:
        return value


def notification_of(m: StoredMessage) -> Notification:
    return Notification(
        id=m.position,
        originator_id=_originator_id(m.originator_id),
        originator_version=m.originator_version,
        topic=m.topic,
        state=m.body,
    )


class JetStreamAggregateRecorder(AggregateRecorder):
    def __init__(
        self,
        nats_url: str,
        stream: str = "MESH",
        cache_size: int = 100_000,
        max_bytes: int | None = None,  # the log's size limit (None: as it is); see commands.stream
        replicas: int | None = None,  # the servers holding each stream (None: as it is); see commands.stream
    ):
        self.stream = stream
        self.replicas = replicas
        self._runner = _LoopThread()
        try:
            self.nc = self._runner.run(
                asyncio.wait_for(
                    nats.connect(
                        nats_servers(nats_url), connect_timeout=2, max_reconnect_attempts=-1, error_cb=_log_nats_error
                    ),
                    5,
                )
            )
            self._runner.run(ensure_stream(self.nc, stream, max_bytes, replicas))
        except Exception as exc:
            self._runner.stop()
            # not the URL: it carries the password
            raise OperationalError(f"cannot open the event store on NATS: {exc}") from None
        # originator id -> (last version, its stream sequence): spares a read before most appends.
        self._last: OrderedDict[str, tuple[int, int]] = OrderedDict()
        # (originator id, version) -> stream sequence, of the versions last read or written: an aggregate cached
        # at a version is brought up to date by reading only what follows it (see select_events).
        self._positions: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # writing

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append atomically. Aggregate recorders return None, application recorders the positions."""
        if not stored_events:
            return None
        sequences = self._runner.run(self._insert(list(stored_events)))
        return sequences if isinstance(self, ApplicationRecorder) else None

    async def _insert(self, events: list[StoredEvent]) -> list[int]:
        expected: dict[str, int] = {}
        versions: dict[str, int] = {}
        for event in events:
            key = str(event.originator_id)
            if key not in expected:
                expected[key] = await self._expected_sequence(key, event.originator_version)
            elif event.originator_version != versions[key] + 1:
                # only the first event of each aggregate is checked by the server; the rest must follow on
                raise IntegrityError(f"events of {key} in one save must have consecutive versions")
            versions[key] = event.originator_version
        if len(events) == 1:
            sequences = await self._publish_one(events[0], expected[str(events[0].originator_id)])
        else:
            sequences = await self._publish_batch(events, expected)
        for event, seq in zip(events, sequences):
            self._remember(str(event.originator_id), event.originator_version, seq)
        return sequences

    async def _expected_sequence(self, key: str, version: int) -> int:
        """The stream sequence the aggregate's subject must end at for `version` to be next (0: empty)."""
        with self._lock:
            cached = self._last.get(key)
        if cached is not None and cached[0] == version - 1:
            return cached[1]
        last = await self._last_of(key)
        if last is None:
            return 0
        if last.originator_version != version - 1:
            raise IntegrityError(f"aggregate {key} is at version {last.originator_version}, not {version - 1}")
        return last.id

    def _headers(self, event: StoredEvent) -> dict[str, str]:
        return {
            HEADER_TOPIC: event.topic,
            HEADER_ORIGINATOR_ID: str(event.originator_id),
            HEADER_ORIGINATOR_VERSION: str(event.originator_version),
        }

    async def _publish_one(self, event: StoredEvent, expected: int) -> list[int]:
        subject = aggregate_subject(self.stream, event.originator_id)
        headers = {
            **self._headers(event),
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            "Nats-Msg-Id": f"{event.originator_id}:{event.originator_version}",
        }
        try:
            reply = await self.nc.request(subject, event.state, headers=headers, timeout=TIMEOUT)
        except asyncio.TimeoutError:
            return [await self._after_lost_ack(event)]
        seq = self._ack(reply, 1)
        if msgspec.json.decode(reply.data).get("duplicate"):
            await self._check_duplicate(event, seq)
        return [seq]

    async def _publish_batch(self, events: list[StoredEvent], expected: dict[str, int]) -> list[int]:
        batch_id = uuid.uuid4().hex
        checked: set[str] = set()
        last = len(events)
        for number, event in enumerate(events, start=1):
            key = str(event.originator_id)
            headers = {**self._headers(event), "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
            if key not in checked:  # the check applies to the first event of each aggregate
                headers["Nats-Expected-Last-Subject-Sequence"] = str(expected[key])
                checked.add(key)
            subject = aggregate_subject(self.stream, event.originator_id)
            if number < last:
                await self.nc.publish(subject, event.state, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                try:
                    reply = await self.nc.request(subject, event.state, headers=headers, timeout=TIMEOUT)
                except asyncio.TimeoutError:
                    return self._range(await self._after_lost_ack(event), last)
                return self._range(self._ack(reply, last), last)
        raise AssertionError("unreachable")

    @staticmethod
    def _range(last_seq: int, count: int) -> list[int]:
        return list(range(last_seq - count + 1, last_seq + 1))

    @staticmethod
    def _ack(reply: Msg, count: int) -> int:
        ack = msgspec.json.decode(reply.data)
        error = ack.get("error")
        if error:
            if error.get("err_code") in CONFLICTS:
                raise IntegrityError(f"concurrent write: {error.get('description')}")
            raise OperationalError(f"JetStream refused the append: {error.get('description')}")
        if count > 1 and ack.get("count") != count:
            raise OperationalError(f"JetStream stored {ack.get('count')} of {count} batched events")
        return int(ack["seq"])

    async def _check_duplicate(self, event: StoredEvent, seq: int) -> None:
        """JetStream took the append for a copy of the message stored at `seq`, the one with the same message id
        (`<originator>:<version>`). On a replicated stream it says so before it checks the expected sequence, so a
        writer that lost the race for a version hears "duplicate", not "wrong last sequence": the append is ours
        only if the stored event is the one we sent; another writer's is a conflict."""
        try:
            stored = await event_log.leader_data(self.nc, self.stream, seq, TIMEOUT)
        except ReadFailed as exc:
            raise OperationalError(str(exc)) from None
        if stored != event.state:
            raise IntegrityError(f"concurrent write: version {event.originator_version} is taken")

    async def _after_lost_ack(self, event: StoredEvent) -> int:
        """No ack came: the subject's last event tells a lost ack from an append that did not happen."""
        last = await self._last_of(str(event.originator_id))
        if last is not None and last.originator_version == event.originator_version and last.state == event.state:
            return last.id
        raise OperationalError("JetStream did not acknowledge the append and it was not stored; try again")

    def _remember(self, key: str, version: int, seq: int) -> None:
        with self._lock:
            self._last[key] = (version, seq)
            self._last.move_to_end(key)
            while len(self._last) > self._cache_size:
                self._last.popitem(last=False)
        self.remember_position(key, version, seq)

    def remember_position(self, key: str, version: int, seq: int) -> None:
        """Version `version` of aggregate `key` is at stream sequence `seq` (a later read of what follows it
        starts there)."""
        with self._lock:
            self._positions[(key, version)] = seq
            while len(self._positions) > self._cache_size:
                self._positions.popitem(last=False)

    def position_of(self, key: str, version: int) -> int | None:
        with self._lock:
            return self._positions.get((key, version))

    # reading

    async def _last_of(self, key: str) -> Notification | None:
        msg = await self.last_message(self.stream, aggregate_subject(self.stream, key))
        return None if msg is None else notification_of(event_log.stored_message(msg))

    async def last_message(self, stream: str, subject: str) -> Msg | None:
        """The last message on `subject` of `stream`, or None."""
        return await self._get(stream, last_by_subject=subject)

    async def message_at(self, seq: int) -> Notification | None:
        """The log's message at stream sequence `seq`, or None."""
        msg = await self._get(self.stream, seq=seq)
        return None if msg is None else notification_of(event_log.stored_message(msg))

    async def _get(self, stream: str, **where: Any) -> Msg | None:
        try:
            return await event_log.get(self.nc, stream, timeout=TIMEOUT, **where)
        except ReadFailed as exc:
            raise OperationalError(str(exc)) from None

    async def _read(
        self, start: int, subjects: str | None = None, through: int | None = None
    ) -> AsyncGenerator[StoredMessage, None]:
        """The log's messages from `start` on (see event_log.read), failures as eventsourcing's."""
        try:
            async for m in event_log.read(self.nc, self.stream, start, subjects, through, TIMEOUT):
                yield m
        except ReadFailed as exc:
            raise OperationalError(f"reading stream {self.stream} failed: {exc}") from None

    async def _events_of(self, key: str, after: int = 0) -> list[Notification]:
        """The aggregate's events after stream sequence `after`."""
        return [notification_of(m) async for m in self._read(after + 1, aggregate_subject(self.stream, key))]

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        key = str(originator_id)
        # where version `gt` is in the stream, if known: only what follows it is read
        after = (self.position_of(key, gt) or 0) if gt else 0
        notifications = self._runner.run(self._events_of(key, after))
        if notifications:
            self._remember(key, notifications[-1].originator_version, notifications[-1].id)
        events = [
            StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)
            for n in notifications
            if (gt is None or n.originator_version > gt) and (lte is None or n.originator_version <= lte)
        ]
        if desc:
            events.reverse()
        return events[:limit] if limit is not None else events

    def close(self) -> None:
        if self._runner.thread.is_alive():
            try:
                self._runner.run(self.nc.close(), timeout=5)
            except Exception:
                pass
            self._runner.stop()
