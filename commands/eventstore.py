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

import time
from typing import Any, Sequence

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    Notification,
    ProcessRecorder,
    Subscription,
    TrackingRecorder,
)
from eventsourcing.utils import Environment

from commands.recorder import READ_BATCH, JetStreamAggregateRecorder, notification_of
from commands.snapshot_recorder import JetStreamSnapshotRecorder
from commands.stream import MAX_BYTES_ENV, REPLICAS_ENV


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
        seq = first
        while len(found) < limit:
            batch = min(READ_BATCH, (stop - seq + 1) if stop is not None else READ_BATCH)
            if batch <= 0:
                break
            messages = await self._direct_get({"seq": seq, "batch": batch})
            for msg in messages:
                n = notification_of(msg)
                if stop is not None and n.id > stop:
                    return found
                if not topics or n.topic in topics:
                    found.append(n)
                    if len(found) == limit:
                        return found
            if len(messages) < batch:
                break
            seq = int(messages[-1].headers["Nats-Sequence"]) + 1
        return found

    def max_notification_id(self) -> int | None:
        info = self._runner.run(self.nc.jetstream().stream_info(self.stream))
        return info.state.last_seq or None

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        return PollingSubscription(self, gt=gt, topics=topics)


class PollingSubscription(Subscription[JetStreamApplicationRecorder]):
    """Yields notifications as they are appended, polling the stream when caught up."""

    def __init__(
        self,
        recorder: JetStreamApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        poll_interval: float = 0.01,
    ):
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._buffer: list[Notification] = []
        self._poll_interval = poll_interval

    def __next__(self) -> Notification:
        while not self._buffer:
            if self._has_been_stopped:
                raise StopIteration
            self._buffer = list(
                self._recorder.select_notifications(
                    start=self._last_notification_id or 0, limit=500, topics=self._topics, inclusive_of_start=False
                )
            )
            if not self._buffer:
                time.sleep(self._poll_interval)
        notification = self._buffer.pop(0)
        self._last_notification_id = notification.id
        return notification


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
