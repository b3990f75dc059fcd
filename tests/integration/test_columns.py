"""Batches of events written as one array per column (projections/columns.py), on a real PostgreSQL: every
value arrives as it was, whatever the batch mixes (missing values, numbers past 64 bits, whole columns empty)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import msgspec
import psycopg

from projections.columns import EventColumns

COLUMNS = EventColumns({"trace_id": "uuid", "timestamp": "timestamptz", "note": "text", "cost": "numeric", "n": "int"})


class Event(msgspec.Struct):
    trace_id: uuid.UUID
    timestamp: datetime
    note: str | None
    cost: int
    n: int | None
    ignored: str = "not a column"


async def test_a_batch_arrives_value_for_value(database_url):
    now = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc)
    events = [
        Event(uuid.uuid4(), now, None, 1, None),
        Event(uuid.uuid4(), now, "é\n'\"", 10**30, None),  # pico-USD far past 64 bits
        Event(uuid.uuid4(), now, "x", 2**63, None),
        Event(uuid.uuid4(), now, None, -5, None),  # `n` holds no value in the whole batch
    ]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "create temp table t (trace_id uuid, time timestamptz, note text, cost numeric(40, 0), n int)"
        )
        await conn.execute(f"insert into t ({COLUMNS.columns}) select * from {COLUMNS.rows}", COLUMNS.params(events))
        rows = await (await conn.execute("select trace_id, time, note, cost, n from t")).fetchall()
    assert sorted(rows) == sorted((e.trace_id, e.timestamp, e.note, e.cost, e.n) for e in events)
    assert COLUMNS.columns == "trace_id, time, note, cost, n"
