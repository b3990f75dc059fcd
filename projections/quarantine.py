"""Events a read model cannot apply: set aside (dead-lettered) so the projection goes on, listed, retried.

An event that makes a projection fail (a value PostgreSQL cannot store, a bug in the projection) would
otherwise fail every retry and stop the read model for good, since the stream never forgets it. The runner
records it here, in the same transaction that moves the position past it; `/health` says `degraded` while
any is quarantined; `mesh projections retry` applies them again once the cause is fixed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable

import msgspec
import psycopg
from psycopg_pool import AsyncConnectionPool

from commands.event_log import decode
from projections.readmodel import Envelope, ReadModel, active_generation, physical_tables
from projections.source import StreamSource

MAX_ERROR_LENGTH = 2000

# Failures that say nothing about the event: the connection or the transaction failed, so the batch is
# retried as a whole rather than any event set aside.
TRANSIENT = (psycopg.OperationalError, psycopg.InterfaceError)


class Quarantined(msgspec.Struct, frozen=True):
    read_model: str
    position: int
    event_name: str
    error: str
    quarantined_at: datetime


def describe(exc: BaseException) -> str:
    """The error as stored and shown: its type and message, printable, bounded."""
    text = f"{type(exc).__name__}: {exc}".replace("\x00", "\\x00")
    return text[:MAX_ERROR_LENGTH]


async def apply_isolating(
    cur: psycopg.AsyncCursor, model: ReadModel, tables: dict[str, str], batch: list[Envelope]
) -> list[tuple[Envelope, BaseException]]:
    """Apply `batch` inside the caller's transaction; return the events that could not be applied.

    The batch runs in a savepoint; if it fails, each event runs in its own savepoint, so the events that apply
    are applied (in order) and those that fail change nothing."""
    conn = cur.connection
    try:
        async with conn.transaction():
            await model.apply(cur, tables, batch)
        return []
    except TRANSIENT:
        raise
    except Exception:
        pass
    failed: list[tuple[Envelope, BaseException]] = []
    for envelope in batch:
        try:
            async with conn.transaction():
                await model.apply(cur, tables, [envelope])
        except TRANSIENT:
            raise
        except Exception as exc:
            failed.append((envelope, exc))
    return failed


async def record(
    cur: psycopg.AsyncCursor, model: ReadModel, generation: int, position: int, event_name: str, error: BaseException
) -> None:
    await cur.execute(
        "insert into projection_quarantine (read_model, generation, position, event_name, error)"
        " values (%s, %s, %s, %s, %s) on conflict (read_model, generation, position)"
        " do update set error = excluded.error, quarantined_at = now()",
        (model.name, generation, position, event_name, describe(error)),
    )


async def quarantined(conn: psycopg.AsyncConnection, model_name: str | None = None) -> list[Quarantined]:
    """What is set aside in the generations in service (of one read model, or all), oldest first."""
    cur = await conn.execute(
        """select q.read_model, q.position, q.event_name, q.error, q.quarantined_at
           from projection_quarantine q join read_model_generations g
             on g.read_model = q.read_model and g.generation = q.generation
           where %(name)s::text is null or q.read_model = %(name)s
           order by q.read_model, q.position""",
        {"name": model_name},
    )
    return [Quarantined(*row) for row in await cur.fetchall()]


async def retry(
    model: ReadModel,
    source: StreamSource,
    pool: AsyncConnectionPool,
    progress: Callable[[Quarantined, str | None], None] | None = None,
) -> tuple[int, int]:
    """Apply the quarantined events of `model` again, oldest first, each in its own transaction with the removal
    of its quarantine row; return (applied, still failing). One that still fails stays, with the new error."""
    applied = failing = 0
    async with pool.connection() as conn:
        generation = await active_generation(conn, model)
        await conn.commit()
        for item in await quarantined(conn, model.name):
            await conn.commit()
            messages = await source.read(item.position, 1)
            error: BaseException | None = None
            async with conn.transaction():
                async with conn.cursor() as cur:
                    try:
                        if not messages or messages[0].position != item.position:
                            raise LookupError(f"stream position {item.position} is not in the stream")
                        m = messages[0]
                        envelope = Envelope(m.position, m.time, m.topic, decode(m))
                        failed = await apply_isolating(cur, model, physical_tables(model, generation), [envelope])
                        error = failed[0][1] if failed else None
                    except TRANSIENT:
                        raise
                    except Exception as exc:
                        error = exc
                    if error is None:
                        await cur.execute(
                            "delete from projection_quarantine where read_model = %s"
                            " and generation = %s and position = %s",
                            (model.name, generation, item.position),
                        )
                        applied += 1
                    else:
                        await record(cur, model, generation, item.position, item.event_name, error)
                        failing += 1
            if progress:
                progress(item, describe(error) if error is not None else None)
    return applied, failing
