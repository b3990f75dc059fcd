"""Month partitions on a real PostgreSQL (projections/partitions.py): one per UTC month a batch holds, made once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from projections.partitions import ensure_months

NEW_YORK_WINTER = timezone(timedelta(hours=-5))


async def partitions_of(cur: psycopg.AsyncCursor, parent: str) -> list[str]:
    await cur.execute(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid"
        " where i.inhparent = to_regclass(%s) order by 1",
        (parent,),
    )
    return [name for (name,) in await cur.fetchall()]


async def test_a_partition_per_utc_month_of_the_times_whatever_their_offset(database_url):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        async with conn.cursor() as cur:
            await cur.execute("create table rows (time timestamptz not null) partition by range (time)")
            times = [
                datetime(2026, 11, 30, 23, 59, tzinfo=timezone.utc),
                datetime(2026, 11, 1, tzinfo=timezone.utc),
                # 19:00 on 31 December in New York is already January in UTC
                datetime(2026, 12, 31, 19, 0, tzinfo=NEW_YORK_WINTER),
            ]
            await ensure_months(cur, "rows", times)
            assert await partitions_of(cur, "rows") == ["rows_p202611", "rows_p202701"]
            await ensure_months(cur, "rows", [datetime(2026, 11, 15, tzinfo=NEW_YORK_WINTER), *times])  # made once
            assert await partitions_of(cur, "rows") == ["rows_p202611", "rows_p202701"]
            await cur.execute("insert into rows select unnest(%s::timestamptz[])", (times,))
            await cur.execute("select count(*) from rows_p202701")
            assert await cur.fetchone() == (1,)
