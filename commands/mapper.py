"""Maps domain events to stored events and back with msgspec.

The stored topic is the event's stable registered name (domain.events), not a
Python import path, so renaming a class never breaks the log. Decoding uses
`msgspec.convert` with the event class, which restores UUID, Decimal and
datetime fields that a generic JSON transcoder would hand back as strings.
Snapshots go through commands/snapshots.py, typed by their aggregate's state struct.
"""

from __future__ import annotations

from typing import Any
import msgspec
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent

from commands import snapshots
from domain.events import decode_event, event_name

_encoder = msgspec.json.Encoder()
_ENVELOPE_FIELDS = ("originator_id", "originator_version")


class MsgspecMapper(Mapper):
    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        if isinstance(domain_event, Snapshot):
            return snapshots.to_stored(domain_event)
        state = {k: v for k, v in vars(domain_event).items() if k not in _ENVELOPE_FIELDS}
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=event_name(type(domain_event)),
            state=_encoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        if snapshots.is_snapshot_topic(stored_event.topic):
            return snapshots.from_stored(stored_event)
        try:
            return decode_event(
                stored_event.topic, stored_event.state, stored_event.originator_id, stored_event.originator_version
            )
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise MapperDeserialisationError(
                f"cannot decode {stored_event.topic} v{stored_event.originator_version} "
                f"of {stored_event.originator_id}: {exc}"
            ) from exc
