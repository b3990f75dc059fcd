"""Snapshots of the aggregates whose histories grow without end.

An account's and a key's budget leases add events all day (a lease, its settlement, its extensions). Without a
snapshot, the first use of each after a restart replays all of them, in the gateway's lease thread: minutes for
a month of a busy account (bench/restart.py). Every `SNAPSHOT_INTERVAL` events the command side stores the
aggregate's state (its typed `...State` struct from the domain) on the stream `<stream>_SNAPSHOTS`, and a
restart replays only the events after it.

A snapshot is a cache of the log, never the truth: one that cannot be read (taken by a Mesh whose aggregate held
other attributes) counts as none, and the aggregate is replayed from its events.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import EventStore, MapperDeserialisationError, StoredEvent
from eventsourcing.utils import get_topic

from domain.account import Account, AccountState
from domain.apikey import ApiKey, ApiKeyState

log = logging.getLogger("mesh.snapshots")

SNAPSHOT_INTERVAL = 200  # events: what a restart replays at most per aggregate
TOPIC_PREFIX = "snapshot."

# stable name -> the aggregate and the struct of its state
SNAPSHOTTED: dict[str, tuple[type[Aggregate], type[msgspec.Struct]]] = {
    "account": (Account, AccountState),
    "key": (ApiKey, ApiKeyState),
}
_NAMES = {get_topic(aggregate): name for name, (aggregate, _) in SNAPSHOTTED.items()}  # by eventsourcing's topic
_encoder = msgspec.json.Encoder()


def is_snapshot_topic(topic: str) -> bool:
    return topic.startswith(TOPIC_PREFIX)


def to_stored(snapshot: Snapshot) -> StoredEvent:
    """The snapshot's state as its aggregate's state struct: an attribute the struct does not name is refused."""
    name = _NAMES[snapshot.topic]
    state = msgspec.convert(snapshot.state, SNAPSHOTTED[name][1])
    return StoredEvent(snapshot.originator_id, snapshot.originator_version, TOPIC_PREFIX + name, _encoder.encode(state))


def from_stored(stored: StoredEvent) -> Snapshot:
    try:
        aggregate, state_type = SNAPSHOTTED[stored.topic.removeprefix(TOPIC_PREFIX)]
        state = msgspec.json.decode(stored.state, type=state_type)
    except (KeyError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MapperDeserialisationError(
            f"unreadable snapshot {stored.topic} of {stored.originator_id}: {exc}"
        ) from None
    fields = msgspec.structs.asdict(state)
    originator_id = stored.originator_id if isinstance(stored.originator_id, UUID) else UUID(stored.originator_id)
    return Snapshot(
        originator_id=originator_id,
        originator_version=stored.originator_version,
        timestamp=fields["_modified_on"],
        topic=get_topic(aggregate),
        state=fields,
    )


class SnapshotStore(EventStore):
    """The snapshot store eventsourcing's repository reads: an unreadable snapshot counts as none."""

    def get(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            return iter(list(super().get(*args, **kwargs)))
        except MapperDeserialisationError as exc:
            log.warning("%s; replaying the aggregate from its events instead", exc)
            return iter(())
