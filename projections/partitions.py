"""Tables partitioned by calendar month (UTC) of a `time` column.

A partition is made the first time a batch holds a row for its month, and old months go by dropping whole
partitions: no row-by-row delete, no vacuum debt. A partition of `<parent>` is `<parent>_pYYYYMM`, so
dropping a read model's generation (its parent tables) drops them too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

import psycopg


def month_of(t: datetime) -> datetime:
    year, month = _year_month(t)
    return datetime(year, month, 1, tzinfo=timezone.utc)


def _year_month(t: datetime) -> tuple[int, int]:
    """The month of `t` in UTC, as (year, month)."""
    if t.tzinfo is not timezone.utc:  # events decode to UTC: a replay converts none
        t = t.astimezone(timezone.utc)
    return t.year, t.month


def month_after(month: datetime) -> datetime:
    return month.replace(year=month.year + month.month // 12, month=month.month % 12 + 1)


def partition_name(parent: str, month: datetime) -> str:
    return f"{parent}_p{month:%Y%m}"


async def ensure_months(cur: psycopg.AsyncCursor, parent: str, times: Iterable[datetime]) -> None:
    """Make sure a partition exists for the month of every time given (one query of the system catalog when they do)."""
    starts = [datetime(year, month, 1, tzinfo=timezone.utc) for year, month in set(map(_year_month, times))]
    months = {partition_name(parent, start): start for start in starts}
    if not months:
        return
    await cur.execute("select name from unnest(%s::text[]) name where to_regclass(name) is null", (list(months),))
    for (name,) in await cur.fetchall():
        start = months[name]
        # DDL takes no bound parameters; the bounds are formatted from datetimes, never from input
        await cur.execute(
            f"create table if not exists {name} partition of {parent}"
            f" for values from ('{start.isoformat()}') to ('{month_after(start).isoformat()}')"
        )


async def drop_months_before(cur: psycopg.AsyncCursor, parent: str, cutoff: datetime) -> list[str]:
    """Drop every partition of `parent` whose whole month lies before `cutoff`; return their names."""
    await cur.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid where i.inhparent = to_regclass(%s)",
        (parent,),
    )
    dropped = []
    for (name,) in await cur.fetchall():
        suffix = name.rsplit("_p", 1)[-1]
        if not (len(suffix) == 6 and suffix.isdigit()):
            continue
        month = datetime(int(suffix[:4]), int(suffix[4:]), 1, tzinfo=timezone.utc)
        if month_after(month) <= cutoff:
            await cur.execute(f"drop table if exists {name}")
            dropped.append(name)
    return dropped
