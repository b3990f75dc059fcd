"""Maps domain events to stored events and back with msgspec.

The stored topic is the event's stable catalogue name (domain.events), not a
Python import path, so renaming a class never breaks the log. Decoding uses
`msgspec.convert` with the event class, which restores UUID, Decimal and
datetime fields that a generic JSON transcoder would hand back as strings.
"""

from __future__ import annotations

from typing import Any
import msgspec
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent

from domain.events import decode_event, event_name

_encoder = msgspec.json.Encoder()
_ENVELOPE_FIELDS = ("originator_id", "originator_version")


class MsgspecMapper(Mapper):
    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        state = {k: v for k, v in vars(domain_event).items() if k not in _ENVELOPE_FIELDS}
        return StoredEvent(
            originator_id=domain_event.originator_id,
            originator_version=domain_event.originator_version,
            topic=event_name(type(domain_event)),
            state=_encoder.encode(state),
        )

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        try:
            return decode_event(
                stored_event.topic, stored_event.state, stored_event.originator_id, stored_event.originator_version
            )
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise MapperDeserialisationError(
                f"cannot decode {stored_event.topic} v{stored_event.originator_version} "
                f"of {stored_event.originator_id}: {exc}"
            ) from exc
