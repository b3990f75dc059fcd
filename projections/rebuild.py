"""Rebuild a read model from position 0 into new tables while the old ones keep serving, then swap."""

from __future__ import annotations

from typing import Callable

from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from projections.readmodel import (
    ReadModel,
    active_generation,
    build_indexes,
    create_generation,
    physical_tables,
    point_views,
    tracking_name,
)
from projections.runner import REPLAY_BATCH, ProjectionRunner
from projections.source import StreamSource


async def rebuild(
    model: ReadModel,
    nc: NATS,
    pool: AsyncConnectionPool,
    stream: str,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Build generation N+1 up to the stream head (its secondary indexes last), swap the views to it, drop
    generation N.

    Returns the new generation. Readers never see a half-built model: the swap is one transaction.
    """
    async with pool.connection() as conn:
        old = await active_generation(conn, model)
        new = old + 1
        async with conn.transaction():
            await _drop_generation(conn, model, new)  # leftovers of an interrupted rebuild
            await create_generation(conn, model, new, indexes=False)
    source = StreamSource(nc, stream)
    try:
        await ProjectionRunner(model, source, pool, generation=new, batch_size=REPLAY_BATCH).catch_up(progress)
    finally:
        await source.close()
    await build_indexes(pool, model, physical_tables(model, new))
    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute(
                "select generation from read_model_generations where read_model = %s for update", (model.name,)
            )
            await point_views(conn, model, new)
            await conn.execute(
                "update read_model_generations set generation = %s where read_model = %s", (new, model.name)
            )
        async with conn.transaction():
            await _drop_generation(conn, model, old)
    return new


async def _drop_generation(conn, model: ReadModel, generation: int) -> None:
    for physical in physical_tables(model, generation).values():
        await conn.execute(f"drop table if exists {physical}")
    await conn.execute("delete from projection_positions where name = %s", (tracking_name(model, generation),))
