"""How current a read-model answer is."""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg

from projections.readmodel import ReadModel, freshness_of


class AsOf(msgspec.Struct):
    """How current a read-model answer is: the stream position it reflects and the time of that event, and the
    last time the read model was seen holding every event of the stream (it had nothing newer to apply then)."""

    position: int
    time: datetime | None
    checked_at: datetime | None = None

    @property
    def current_at(self) -> datetime | None:
        """What a page calls "as of": the answer held everything there was at this time."""
        if self.checked_at is not None and (self.time is None or self.checked_at >= self.time):
            return self.checked_at
        return self.time


def joined(*parts: tuple[int, datetime | None, datetime | None]) -> AsOf:
    """An answer read from several read models is as current as the one furthest behind."""
    position, time, _ = min(parts, key=lambda part: part[0])
    checks = [part[2] for part in parts]
    return AsOf(position, time, min(checks) if all(checks) else None)  # type: ignore[type-var]


async def read_as_of(conn: psycopg.AsyncConnection, *models: ReadModel) -> AsOf:
    """How current an answer read on `conn` from `models` is: read in the answer's own transaction, so that both come
    from one snapshot."""
    return joined(*[await freshness_of(conn, model) for model in models])
