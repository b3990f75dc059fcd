"""What a read model is, and the bookkeeping every read model shares.

A read model owns some tables. Each build of it (a generation) writes to its
own physical tables, `<table>_g<N>`, and queries read views named `<table>`
that point at the generation in service. A rebuild fills generation N+1 from
position 0 while N keeps serving, then swaps the views in one transaction.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, Protocol

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool


class Envelope(msgspec.Struct, frozen=True):
    """One decoded event with its place in the stream."""

    position: int
    time: datetime
    topic: str
    event: Any


class ReadModel(Protocol):
    name: str
    tables: tuple[str, ...]  # logical table names; queries use these (views)
    topics: frozenset[str]  # the events it reads; others are skipped undecoded

    def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> Any:
        """Create this generation's tables; `t` maps logical names to physical ones."""

    def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> Any:
        """Apply a batch of events, in order, inside the caller's transaction."""


# A read model may also define `indexes(t)`, the statements that make the secondary indexes of its tables
# (idempotent), and `primary_keys`, the primary key of a table its `create_tables` leaves without one (logical
# table name: columns). A new generation is made with them, except by a rebuild, which adds them once its tables
# are filled (one sort per index instead of an index entry per row) and before it puts the generation in service.


async def create_indexes(cur: psycopg.AsyncCursor, model: ReadModel, t: dict[str, str]) -> None:
    """The model's primary keys, then its secondary indexes, on this generation's tables."""
    for table, columns in getattr(model, "primary_keys", {}).items():
        await add_primary_key(cur, t[table], columns)
    indexes = getattr(model, "indexes", None)
    for statement in indexes(t) if indexes is not None else []:
        await cur.execute(statement)


async def build_indexes(pool: AsyncConnectionPool, model: ReadModel, t: dict[str, str]) -> None:
    """What `create_indexes` adds, to a generation a rebuild has filled: on a partitioned table each partition's
    key and indexes are built on their own first, INDEX_BUILDERS at a time on connections of their own, then the
    parent's, which adopt them. One build leaves CPUs idle between its phases (and PostgreSQL gives it one helper
    process at most), and a partition's indexes have names of their own: built on the parent at once, two would
    pick the same name for their partitions' indexes."""
    async with pool.connection() as conn:
        partitions = await partitions_by_size(conn, [t[table] for table in model.tables])
    keys = getattr(model, "primary_keys", {})
    statements = getattr(model, "indexes", lambda _: [])
    on_parents = set(statements(t))
    # A partition's key first: adding it locks the partition, where its indexes' builds share it and run together.
    builds: asyncio.Queue[str | tuple[str, tuple[str, ...]]] = asyncio.Queue()
    for table in model.tables:
        for partition in partitions.get(t[table], []):
            if table in keys:
                builds.put_nowait((partition, keys[table]))
            for statement in statements({**t, table: partition}):
                if statement not in on_parents:  # one that names the table, naming the partition instead
                    builds.put_nowait(statement)

    async def builder() -> None:
        async with pool.connection() as conn:
            while not builds.empty():
                build = builds.get_nowait()
                async with conn.transaction(), conn.cursor() as cur:
                    if isinstance(build, str):
                        await cur.execute(build)
                    else:
                        await add_primary_key(cur, *build)

    async with asyncio.TaskGroup() as builders:  # one failing stops the other
        for _ in range(INDEX_BUILDERS):
            builders.create_task(builder())
    async with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
        await create_indexes(cur, model, t)


INDEX_BUILDERS = 2  # connections building a rebuilt generation's partitions' keys and indexes at once


async def partitions_by_size(conn: psycopg.AsyncConnection, parents: list[str]) -> dict[str, list[str]]:
    """The partitions of each of these tables that has any, largest first."""
    cur = await conn.execute(
        """select parent.relname, child.relname from pg_inherits i
            join pg_class parent on parent.oid = i.inhparent join pg_class child on child.oid = i.inhrelid
            where parent.oid = any(array(select to_regclass(name) from unnest(%s::text[]) name))
            order by pg_relation_size(child.oid) desc""",
        (parents,),
    )
    partitions: dict[str, list[str]] = {}
    for parent, child in await cur.fetchall():
        partitions.setdefault(parent, []).append(child)
    return partitions


async def add_primary_key(cur: psycopg.AsyncCursor, table: str, columns: tuple[str, ...]) -> None:
    """Give `table` its primary key `<table>_pkey` on `columns` unless it has it (idempotent). A table whose rows
    a rebuild inserted without the key may hold a row more than once, where the stream holds an event more than
    once (the same encoded event published again): those copies are alike, so all but one are deleted, and the
    key is added then. Where the key comes before any row, the inserts' `on conflict do nothing` skips such
    copies instead."""
    if await (await cur.execute("select to_regclass(%s)", (f"{table}_pkey",))).fetchone() != (None,):
        return
    key = ", ".join(columns)
    add = f"alter table {table} add constraint {table}_pkey primary key ({key})"
    try:
        async with cur.connection.transaction():  # a savepoint: the failed statement undone alone
            await cur.execute(add)
    except psycopg.errors.UniqueViolation:
        same = " and ".join(f"t.{column} = copies.{column}" for column in columns)
        await cur.execute(
            f"""delete from {table} t using (
                    select {key}, min(ctid) as kept from {table} group by {key} having count(*) > 1
                ) copies where {same} and t.ctid <> copies.kept"""
        )
        await cur.execute(add)


SCHEMA = """
create table if not exists projection_positions (
    name text primary key,
    position bigint not null,
    event_time timestamptz,
    updated_at timestamptz not null default now()
);
-- the last time the runner read the stream's head and had applied everything before it: how current the
-- read model's answers are (a runner that stopped leaves it behind)
alter table projection_positions add column if not exists checked_at timestamptz;
create table if not exists read_model_generations (
    read_model text primary key,
    generation int not null
);
create table if not exists projection_quarantine (
    read_model text not null,
    generation int not null,
    position bigint not null,
    event_name text not null,
    error text not null,
    quarantined_at timestamptz not null default now(),
    primary key (read_model, generation, position)
);
"""


def physical_tables(model: ReadModel, generation: int) -> dict[str, str]:
    return {table: f"{table}_g{generation}" for table in model.tables}


def tracking_name(model: ReadModel, generation: int) -> str:
    return f"{model.name}_g{generation}"


async def ensure_schema(conn: psycopg.AsyncConnection, models: list[ReadModel]) -> list[ReadModel]:
    """Create bookkeeping and first-generation tables and views if they do not exist, or bring the generation
    in service up to date. Idempotent. Returns the models whose generation in service lacked a table (built by
    an older Mesh): that table starts empty, so they need a rebuild (projections.rebuild) before they serve."""
    outdated = []
    async with conn.transaction():
        await conn.execute("select pg_advisory_xact_lock(7246001)")  # one installer at a time
        await conn.execute(SCHEMA)
        for model in models:
            cur = await conn.execute(
                "select generation from read_model_generations where read_model = %s", (model.name,)
            )
            row = await cur.fetchone()
            if row is None:
                await create_generation(conn, model, 1)
                await point_views(conn, model, 1)
                await conn.execute(
                    "insert into read_model_generations (read_model, generation) values (%s, 1)", (model.name,)
                )
            else:  # an upgrade may add columns: create_tables is idempotent, and views list their columns
                if await _lacks_a_table(conn, model, row[0]):
                    outdated.append(model)
                async with conn.cursor() as upgrade:
                    await model.create_tables(upgrade, physical_tables(model, row[0]))
                    await create_indexes(upgrade, model, physical_tables(model, row[0]))
                if not await _views_show_every_column(conn, model, row[0]):
                    await point_views(conn, model, row[0])
    return outdated


async def _lacks_a_table(conn: psycopg.AsyncConnection, model: ReadModel, generation: int) -> bool:
    cur = await conn.execute(
        "select count(*) from unnest(%s::text[]) t where to_regclass(t) is null",
        (list(physical_tables(model, generation).values()),),
    )
    return (await cur.fetchone())[0] > 0


async def create_generation(
    conn: psycopg.AsyncConnection, model: ReadModel, generation: int, indexes: bool = True
) -> None:
    """The tables of a generation (with their secondary indexes unless `indexes` is false), at position 0."""
    async with conn.cursor() as cur:
        await model.create_tables(cur, physical_tables(model, generation))
        if indexes:
            await create_indexes(cur, model, physical_tables(model, generation))
        await cur.execute(
            "insert into projection_positions (name, position) values (%s, 0) on conflict (name) do nothing",
            (tracking_name(model, generation),),
        )


async def point_views(conn: psycopg.AsyncConnection, model: ReadModel, generation: int) -> None:
    for table, physical in physical_tables(model, generation).items():
        await conn.execute(f"drop view if exists {table}")
        await conn.execute(f"create view {table} as select * from {physical}")


async def _views_show_every_column(conn: psycopg.AsyncConnection, model: ReadModel, generation: int) -> bool:
    for table, physical in physical_tables(model, generation).items():
        cur = await conn.execute(
            "select count(*) filter (where table_name = %s), count(*) filter (where table_name = %s) "
            "from information_schema.columns where table_schema = current_schema() and table_name in (%s, %s)",
            (table, physical, table, physical),
        )
        in_view, in_table = await cur.fetchone()
        if in_view != in_table:
            return False
    return True


async def active_generation(conn: psycopg.AsyncConnection, model: ReadModel) -> int:
    cur = await conn.execute("select generation from read_model_generations where read_model = %s", (model.name,))
    row = await cur.fetchone()
    return row[0] if row else 1


async def position_of(conn: psycopg.AsyncConnection, model: ReadModel) -> tuple[int, datetime | None]:
    """Position and event time the model in service reflects (its `as_of`)."""
    position, event_time, _ = await freshness_of(conn, model)
    return position, event_time


async def freshness_of(conn: psycopg.AsyncConnection, model: ReadModel) -> tuple[int, datetime | None, datetime | None]:
    """Position and event time the model in service reflects, and when it was last seen to hold every event of
    the stream (None: never, or not since it moved)."""
    cur = await conn.execute(
        """select p.position, p.event_time, p.checked_at from projection_positions p
           join read_model_generations g on p.name = g.read_model || '_g' || g.generation
           where g.read_model = %s""",
        (model.name,),
    )
    row = await cur.fetchone()
    return (row[0], row[1], row[2]) if row else (0, None, None)
