"""Each aggregate's latest snapshot, on a JetStream stream of its own beside the event log."""

from __future__ import annotations

import logging
from typing import Any, Sequence
from uuid import UUID

import msgspec
from eventsourcing.persistence import AggregateRecorder, OperationalError, StoredEvent

from commands.event_log import stored_message
from commands.recorder import TIMEOUT, JetStreamAggregateRecorder, notification_of
from commands.stream import ensure_snapshots_stream, snapshots_stream
from domain.events import snapshot_subject

log = logging.getLogger("mesh.eventstore")

HEADER_LOG_SEQUENCE = "Mesh-Log-Sequence"  # on a snapshot: the log sequence of the aggregate version it holds


class JetStreamSnapshotRecorder(AggregateRecorder):
    """Each aggregate's latest snapshot, on the stream `<stream>_SNAPSHOTS` (one message kept per aggregate).

    It shares the event recorder's connection and what that knows of where each version is in the log: a
    snapshot carries the log sequence of its version (header `Mesh-Log-Sequence`), so after a restart the events
    that follow it are read from there, not from the aggregate's first event."""

    def __init__(self, events: JetStreamAggregateRecorder):
        self.events = events
        self.stream = snapshots_stream(events.stream)
        events._runner.run(ensure_snapshots_stream(events.nc, events.stream, events.replicas))

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        for event in stored_events:
            self.events._runner.run(self._put(event))
        return None

    async def _put(self, event: StoredEvent) -> None:
        headers = self.events._headers(event)
        seq = self.events.position_of(str(event.originator_id), event.originator_version)
        if seq is not None:
            headers[HEADER_LOG_SEQUENCE] = str(seq)
        subject = snapshot_subject(self.events.stream, event.originator_id)
        reply = await self.events.nc.request(subject, event.state, headers=headers, timeout=TIMEOUT)
        error = msgspec.json.decode(reply.data).get("error")
        if error:
            raise OperationalError(f"JetStream refused the snapshot: {error.get('description')}")

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The latest snapshot, if it is in the range asked for (only the latest is kept) and the log holds the
        version it was taken at, where it says: a log restored from an older backup beside newer snapshots, or a
        snapshot of another stream, is not used."""
        key = str(originator_id)
        msg = self.events._runner.run(self.events.last_message(self.stream, snapshot_subject(self.events.stream, key)))
        if msg is None or limit == 0:
            return []
        n = notification_of(stored_message(msg))
        if (gt is not None and n.originator_version <= gt) or (lte is not None and n.originator_version > lte):
            return []
        seq = (msg.headers or {}).get(HEADER_LOG_SEQUENCE, "")
        logged = self.events._runner.run(self.events.message_at(int(seq))) if seq.isdigit() else None
        claimed = (n.originator_id, n.originator_version)
        if logged is None or (logged.originator_id, logged.originator_version) != claimed:
            log.warning(
                "snapshot of %s at version %d is not in the log; replaying its events", key, n.originator_version
            )
            return []
        self.events.remember_position(key, n.originator_version, int(seq))
        return [StoredEvent(originator_id, n.originator_version, n.topic, n.state)]
