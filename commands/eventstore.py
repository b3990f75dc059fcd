"""An eventsourcing persistence module on NATS JetStream (PERSISTENCE_MODULE="commands.eventstore").

- One subject per aggregate: `<prefix>.agg.<originator id>`.
- Optimistic concurrency: each append says which stream sequence it expects
  the aggregate's subject to end at (`Nats-Expected-Last-Subject-Sequence`,
  0 = no events yet). A stale writer is refused (JetStream error 10071) and
  gets `IntegrityError`, i.e. a `RecordConflictError`.
- Several events in one save are one ADR-50 atomic batch: all or nothing,
  across subjects.
- Notification id = stream sequence, so every reader of the stream agrees on
  positions.

eventsourcing is synchronous and nats-py is asyncio-only, so the recorder runs
nats-py on a private event loop in a daemon thread.

The aggregate recorder is in commands/recorder.py, the snapshot recorder in commands/snapshot_recorder.py; this
module holds what eventsourcing looks up by its name: the infrastructure factory, and the application recorder
with its subscription.
"""

from __future__ import annotations

import threading
from contextlib import aclosing
from typing import Any, AsyncGenerator, Sequence

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    Notification,
    OperationalError,
    ProcessRecorder,
    Subscription,
    TrackingRecorder,
)
from eventsourcing.utils import Environment

from commands import event_log
from commands.event_log import StoredMessage
from commands.recorder import JetStreamAggregateRecorder, notification_of
from commands.snapshot_recorder import JetStreamSnapshotRecorder
from commands.stream import MAX_BYTES_ENV, REPLICAS_ENV
from domain.events import subject_prefix

STOP_CHECK = 0.5  # seconds a subscription's reader waits for an append before it looks whether it was stopped


class JetStreamApplicationRecorder(JetStreamAggregateRecorder, ApplicationRecorder):
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        first = (start or 1) if inclusive_of_start else (start or 0) + 1
        return self._runner.run(self._select(max(first, 1), limit, stop, tuple(topics)))

    async def _select(self, first: int, limit: int, stop: int | None, topics: tuple[str, ...]) -> list[Notification]:
        found: list[Notification] = []
        if limit <= 0:
            return found
        async with aclosing(self._read(first, through=stop)) as messages:
            async for m in messages:
                if not topics or m.topic in topics:
                    found.append(notification_of(m))
                    if len(found) == limit:
                        break
        return found

    def max_notification_id(self) -> int | None:
        return self._runner.run(event_log.head(self.nc, self.stream)) or None

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return PushSubscription(self, gt=gt, topics=topics)


class PushSubscription(Subscription[JetStreamApplicationRecorder]):
    """Yields notifications as they are appended, pushed by JetStream (event_log.tail): no polling. A stop is
    seen within STOP_CHECK seconds by a reader waiting for the next one."""

    def __init__(self, recorder: JetStreamApplicationRecorder, gt: int | None = None, topics: Sequence[str] = ()):
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._messages: AsyncGenerator[StoredMessage | None, None] | None = None
        self._reading = threading.Lock()  # held by __next__ while it waits on the recorder's loop

    def __next__(self) -> Notification:
        with self._reading:
            while not self._has_been_stopped:
                notification = self._recorder._runner.run(self._next())
                if notification is not None:
                    self._last_notification_id = notification.id
                    return notification
            self._close()
        raise StopIteration

    async def _next(self) -> Notification | None:
        """The next notification of the topics asked for; None after STOP_CHECK seconds without one."""
        if self._messages is None:
            recorder = self._recorder
            subjects = [f"{subject_prefix(recorder.stream)}.>"]
            start = (self._last_notification_id or 0) + 1
            self._messages = event_log.tail(recorder.nc, recorder.stream, start, subjects, STOP_CHECK)
        while True:
            m = await anext(self._messages)
            if m is None:
                return None
            if not self._topics or m.topic in self._topics:
                return notification_of(m)

    def stop(self) -> None:
        super().stop()
        if self._reading.acquire(blocking=False):  # else __next__ closes it when it sees the stop
            try:
                self._close()
            finally:
                self._reading.release()

    def _close(self) -> None:
        if self._messages is not None:
            messages, self._messages = self._messages, None
            try:
                self._recorder._runner.run(messages.aclose())
            except OperationalError:
                pass  # the store is closed: so is the consumer


class Factory(InfrastructureFactory[TrackingRecorder]):
    """eventsourcing's entry point: `PERSISTENCE_MODULE=commands.eventstore`."""

    MESH_NATS_URL = "MESH_NATS_URL"
    MESH_STREAM = "MESH_STREAM"

    def __init__(self, env: Environment):
        super().__init__(env)
        self.nats_url = self.env.get(self.MESH_NATS_URL) or "nats://127.0.0.1:4222"
        self.stream = self.env.get(self.MESH_STREAM) or "MESH"
        limit = self.env.get(MAX_BYTES_ENV)
        self.max_bytes = int(limit) if limit else None
        replicas = self.env.get(REPLICAS_ENV)
        self.replicas = int(replicas) if replicas else None
        self._recorders: list[JetStreamAggregateRecorder] = []

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        if purpose == "snapshots":  # beside the application's events (constructed before), on their connection
            if not self._recorders:
                self._track(
                    JetStreamAggregateRecorder(
                        self.nats_url, self.stream, max_bytes=self.max_bytes, replicas=self.replicas
                    )
                )
            return JetStreamSnapshotRecorder(self._recorders[0])
        return self._track(
            JetStreamAggregateRecorder(self.nats_url, self.stream, max_bytes=self.max_bytes, replicas=self.replicas)
        )

    def application_recorder(self) -> ApplicationRecorder:
        return self._track(
            JetStreamApplicationRecorder(self.nats_url, self.stream, max_bytes=self.max_bytes, replicas=self.replicas)
        )

    def tracking_recorder(self, tracking_recorder_class: type[TrackingRecorder] | None = None) -> TrackingRecorder:
        raise NotImplementedError("read models track their position in PostgreSQL (projections.runner)")

    def process_recorder(self) -> ProcessRecorder:
        raise NotImplementedError("process recorders are not supported on JetStream")

    def _track(self, recorder: Any) -> Any:
        self._recorders.append(recorder)
        return recorder

    def close(self) -> None:
        for recorder in self._recorders:
            recorder.close()
        self._recorders.clear()
