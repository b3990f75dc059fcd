"""A batch of events written as table rows in one statement: one array per column, sent in binary.

`insert ... select * from unnest(%b::uuid[], %b::timestamptz[], ...)`: PostgreSQL reads each value in its
binary form instead of parsing text (one JSON array read by json_to_recordset), and one statement carries the
whole batch instead of one per row (executemany). Of the ways compared in bench/README.md it costs the
projection worker and its PostgreSQL backend the least per event.
"""

from __future__ import annotations

from typing import Any, Sequence


class EventColumns:
    """The event fields a table keeps, each with its column type (an event's `timestamp` goes to `time`)."""

    def __init__(self, types: dict[str, str]):
        self.fields = tuple(types)
        self.columns = ", ".join("time" if name == "timestamp" else name for name in types)
        self.rows = "unnest(" + ", ".join(f"%b::{kind}[]" for kind in types.values()) + ")"

    def params(self, events: Sequence[Any]) -> list[list]:
        """The query parameters of `rows` for these events: one list per column."""
        return [[getattr(event, name) for event in events] for name in self.fields]
