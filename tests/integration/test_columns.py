"""Batches of events written as one array per column (projections/columns.py), on a real PostgreSQL: every
value arrives as it was, whatever the batch mixes (missing values, numbers past 64 bits, whole columns empty,
times before PostgreSQL's epoch, text PostgreSQL would quote)."""

from __future__ import annotations

import struct
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import psycopg
import pytest

from projections.columns import EventColumns

TYPES = {
    "trace_id": "uuid",
    "timestamp": "timestamptz",
    "note": "text",
    "cost": "numeric",
    "n": "int",
    "big": "bigint",
    "flag": "boolean",
    "lease_id": "uuid",
}
COLUMNS = EventColumns(TYPES)
TABLE = """create temp table t (trace_id uuid, time timestamptz, note text, cost numeric(40, 0), n int, big bigint,
    flag boolean, lease_id uuid)"""


class Event(msgspec.Struct):
    trace_id: uuid.UUID
    timestamp: datetime
    note: str | None
    cost: int
    n: int | None
    big: int | None = 0
    flag: bool | None = False
    lease_id: uuid.UUID | None = None
    ignored: str = "not a column"


def _row(e: Event) -> tuple:
    return (e.trace_id, e.timestamp, e.note, e.cost, e.n, e.big, e.flag, e.lease_id)


async def _roundtrip(database_url: str, events: list[Event]) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(TABLE)
        await conn.execute(f"insert into t ({COLUMNS.columns}) select * from {COLUMNS.rows}", COLUMNS.params(events))
        return await (await conn.execute("select * from t")).fetchall()


async def test_a_batch_arrives_value_for_value(database_url):
    now = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc)
    events = [
        Event(uuid.uuid4(), now, None, 1, None, None, None, uuid.uuid4()),
        Event(uuid.uuid4(), now, "é\n'\"{},NULL\\", 10**30, None, -(2**63), True),  # pico-USD far past 64 bits
        Event(uuid.uuid4(), now - timedelta(days=20000, microseconds=1), "", 2**63, None, 2**63 - 1, False),
        Event(uuid.uuid4(), now.astimezone(timezone(timedelta(hours=5, minutes=30))), None, -5, None),  # `n`: no value
    ]
    rows = await _roundtrip(database_url, events)
    assert sorted(rows) == sorted(_row(e) for e in events)
    assert COLUMNS.columns == "trace_id, time, note, cost, n, big, flag, lease_id"


async def test_columns_without_a_missing_value_take_the_whole_column_paths(database_url):
    """Every column full: uuid, time and boolean joined, int and bigint packed at once, text one by one."""
    start = datetime(2026, 11, 30, tzinfo=timezone.utc)
    events = [
        Event(
            uuid.uuid4(),
            start + timedelta(microseconds=7 * i),
            f"note {i} ✓",
            i * 10**20,
            -i,
            2**40 + i,
            i % 2 == 0,
            uuid.uuid4(),
        )
        for i in range(2500)
    ]
    rows = await _roundtrip(database_url, events)
    assert sorted(rows) == sorted(_row(e) for e in events)


async def test_text_repeating_a_few_values_encodes_each_once_and_arrives_as_it_was(database_url):
    """A text column of few distinct values (models, providers, statuses), some missing, some PostgreSQL would
    quote: each distinct value is encoded once, and every row still gets its own."""
    now = datetime(2026, 11, 30, tzinfo=timezone.utc)
    notes = ["gpt-4o", None, "", "é\n'\"{},NULL\\", "gpt-4o", "claude ✓"]
    events = [Event(uuid.uuid4(), now, notes[i % len(notes)], i, i) for i in range(10 * len(notes))]
    rows = await _roundtrip(database_url, events)
    assert sorted(rows) == sorted(_row(e) for e in events)


async def test_an_empty_batch_writes_nothing(database_url):
    assert await _roundtrip(database_url, []) == []


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1])
async def test_a_value_outside_its_column_type_is_refused_before_it_is_sent(database_url, value):
    with pytest.raises(struct.error):
        COLUMNS.params([Event(uuid.uuid4(), datetime.now(timezone.utc), None, 0, value)])
