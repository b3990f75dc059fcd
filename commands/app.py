"""The command side: one eventsourcing Application whose event store is the JetStream stream."""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, TypeVar

from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import EventStore, RecordConflictError

from commands.snapshots import SNAPSHOT_INTERVAL, SNAPSHOTTED, SnapshotStore
from domain.account import Account
from domain.quota import Holdings

T = TypeVar("T")
log = logging.getLogger("mesh.commands")


class Conflict(RuntimeError):
    """Another writer changed the same aggregate at the same time, and retrying did not help."""


class NotFound(LookupError):
    pass


AGGREGATE_CACHE = 10_000  # aggregates kept in memory between use cases


class MeshApplication(Application):
    """Holds the aggregates of every use case. Saving returns the stream position reached,
    so callers can wait for read models to catch up before answering.

    Aggregates are cached, and each use case brings its copy up to date by reading only the events appended
    since (eventsourcing's fast-forward; another process's writes included). Without the cache every use case
    replayed an aggregate's whole history: an account's budget leases add events all day, and replaying them in
    the gateway's lease thread held the interpreter longer and longer, stalling every request meanwhile.
    The aggregates whose histories grow without end are snapshotted (commands/snapshots.py), so an aggregate
    not in the cache (after a restart) replays at most SNAPSHOT_INTERVAL events."""

    name = "Mesh"
    snapshotting_intervals = {aggregate: SNAPSHOT_INTERVAL for aggregate, _ in SNAPSHOTTED.values()}

    def __init__(self, nats_url: str, stream: str = "MESH", env: dict[str, str] | None = None):
        super().__init__(
            env={
                "PERSISTENCE_MODULE": "commands.eventstore",
                "MAPPER_TOPIC": "commands.mapper:MsgspecMapper",
                "MESH_NATS_URL": nats_url,
                "MESH_STREAM": stream,
                "AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE),
                **(env or {}),
            }
        )

    def construct_snapshot_store(self) -> EventStore:
        return SnapshotStore(mapper=self.mapper, recorder=self.factory.aggregate_recorder(purpose="snapshots"))

    def _take_snapshots(self, processing_event: ProcessingEvent) -> None:
        """Snapshot each saved aggregate whose new events crossed a multiple of its interval, as it is now.

        eventsourcing's own way rebuilds the aggregate from the store first; the aggregate just saved is already
        that state. A failure is logged, not raised: the events are stored, and a snapshot is only a cache."""
        if self.snapshots is None:
            return
        new_events: dict[Any, int] = {}
        for event in processing_event.events:
            new_events[event.originator_id] = new_events.get(event.originator_id, 0) + 1
        for aggregate_id, count in new_events.items():
            aggregate = processing_event.aggregates.get(aggregate_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if (
                aggregate is None
                or interval is None
                or aggregate.version // interval == (aggregate.version - count) // interval
            ):
                continue
            try:
                self.snapshots.put([Snapshot.take(aggregate)])
            except Exception:
                log.exception(
                    "could not snapshot %s %s at version %d", type(aggregate).__name__, aggregate_id, aggregate.version
                )

    def save_all(self, *aggregates: Any) -> int:
        """Save atomically; return the stream position of the last event written."""
        recordings = self.save(*aggregates)
        return max((r.notification.id for r in recordings), default=0)

    def retrying(self, use_case: Callable[[], T], attempts: int = 12) -> T:
        """Run a load-decide-save use case again, after a jittered backoff, when a concurrent writer
        got there first; report a Conflict only if it keeps losing."""
        for attempt in range(attempts):
            try:
                return use_case()
            except RecordConflictError:
                time.sleep(random.uniform(0, min(0.1, 0.002 * 2**attempt)))
        raise Conflict("the resource was changed concurrently too often; try again")

    def account(self, account_id: UUID) -> Account:
        """Load an account, or raise NotFound."""
        try:
            account = self.repository.get(account_id)
        except AggregateNotFoundError:
            account = None
        if not isinstance(account, Account):
            raise NotFound(f"no account with id {account_id}")
        return account


def holdings_of(app: MeshApplication, account_id: UUID) -> Holdings:
    """The account's holdings (its keys and templates counted against the quotas), opened at first use.

    Keys and templates made before the holdings existed (by an older Mesh) are not in them: they do not count."""
    try:
        holdings = app.repository.get(Holdings.create_id(account_id))
    except AggregateNotFoundError:
        return Holdings(account_id=account_id)
    if not isinstance(holdings, Holdings):
        raise NotFound(f"no holdings of account {account_id}")
    return holdings
