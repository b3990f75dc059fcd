"""The command side: one eventsourcing Application whose event store is the JetStream stream."""

from __future__ import annotations

import random
import time
from typing import Any, Callable, TypeVar

from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import RecordConflictError

from domain.account import Account

T = TypeVar("T")


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
    the gateway's lease thread held the interpreter longer and longer, stalling every request meanwhile."""

    name = "Mesh"

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
