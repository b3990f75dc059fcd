"""Applies the stream to a read model exactly once.

Each batch is applied in one PostgreSQL transaction together with the new
stream position, so a crash anywhere leaves either the whole batch or none of
it; the runner resumes from the stored position. The position row is locked
and re-checked inside the transaction, so two runners of the same read model
(say, two workers) cannot apply a batch twice.

An event the read model cannot apply (it cannot be decoded, or applying it fails) is quarantined
(projections/quarantine.py) in the same transaction as the position, and the rest of the batch applies:
one such event never stops the read model.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Awaitable, Callable

from psycopg_pool import AsyncConnectionPool

from commands.event_log import StoredMessage, decode
from domain.events import log_subjects
from projections import quarantine
from projections.readmodel import (
    Envelope,
    ReadModel,
    active_generation,
    physical_tables,
    position_of,
    tracking_name,
)
from projections.source import REPLAY_BATCH, Read, StreamSource

log = logging.getLogger("mesh.projections")

# An idle runner reads when told something was appended (`arrived`, `wake`). A notice can come before the stream
# stores its message, so right after a read it looks again at FIRST_LOOK, doubling while that stays within
# LAST_QUICK_LOOK (5 and 15 ms after the read); then only at IDLE_LOOK: what a notice lost costs at most. Each look
# is a read of the log by every runner that reads what was appended, so they are few. A read model of aggregate
# events alone reads usage appends it skips at most every CHECKPOINT_EVERY, so its stored position follows the
# head.
FIRST_LOOK = 0.005  # seconds
LAST_QUICK_LOOK = 0.01  # seconds: the longest wait of a quick look
IDLE_LOOK = 5.0  # seconds
CHECKPOINT_EVERY = 1.0  # seconds between two stores of a position that moved with nothing applied

BeforeCommit = Callable[[list[StoredMessage]], Awaitable[None]]


class ProjectionRunner:
    def __init__(
        self,
        model: ReadModel,
        source: StreamSource,
        pool: AsyncConnectionPool,
        *,
        generation: int | None = None,
        batch_size: int = 1000,
        before_commit: BeforeCommit | None = None,
        after_commit: Callable[[], None] | None = None,
        checkpoint_every: float = CHECKPOINT_EVERY,
    ):
        self.model = model
        self.source = source
        self.pool = pool
        self.fixed_generation = generation  # None: follow the generation in service
        self.batch_size = batch_size
        self.before_commit = before_commit  # a test hook: runs after the rows are written, before COMMIT
        self.after_commit = after_commit  # told each time a batch with events in it is committed
        self.checkpoint_every = checkpoint_every
        self.position = 0  # how far this runner has read
        self.subjects = log_subjects(source.stream, model.topics)  # what it reads of the stream (None: all)
        self.full = False  # the last read left more to read right after it
        self._prefetch: tuple[int, asyncio.Future[Read]] | None = None  # the next batch, read ahead: its start
        self._generation: int | None = None  # what this runner believes is stored; None: look it up
        self._stored = 0
        self._stored_at = float("-inf")
        self._position_time = None
        self._woken = asyncio.Event()  # a reader waits for what was appended: read now, even while lingering
        self._arrived = asyncio.Event()  # something was appended: read now if idle
        self._skipped = asyncio.Event()  # something this read model does not read was appended since its last read
        self.current = False  # the last read reached the head and nothing was appended for it since

    async def run(self, stop: asyncio.Event, max_idle: float = IDLE_LOOK, linger: float = 0.02) -> None:
        """Apply batches until `stop` is set. When caught up, wait for `arrived()` or `wake()` (looking again a few
        times soon after a read, then every `max_idle`, in case a notice was lost), so an event is applied as it
        arrives. Under load (more arrived while a batch was applied), wait `linger` seconds unless woken: the
        next batch then carries many events in one transaction."""
        idle = FIRST_LOOK
        while not stop.is_set():
            # cleared before the read: what arrives while this batch is applied is read right after it
            self._woken.clear()
            self._arrived.clear()
            self._skipped.clear()
            failed = False
            try:
                applied = await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("projection %s failed a batch; retrying", self.model.name)
                self._generation = None
                applied, failed = 0, True
                await asyncio.sleep(1)
            if self.full:
                continue
            loaded = applied and self._arrived.is_set()
            self.current = not (failed or self._arrived.is_set() or self._woken.is_set())
            if loaded:
                await any_set([stop, self._woken], linger)
                idle = FIRST_LOOK
            elif await self._wait([stop, self._woken, self._arrived], idle):
                idle = FIRST_LOOK  # told: a read now, then the quick looks
            elif idle < max_idle:
                idle = idle * 2 if idle * 2 <= LAST_QUICK_LOOK else max_idle
            self.current = False

    def arrived(self) -> None:
        """Something this read model may read was appended: an idle runner reads it now."""
        self.current = False
        self._arrived.set()

    def skipped(self) -> None:
        """Something this read model does not read was appended: it reads past it (and stores the position it
        reaches) within `checkpoint_every`, not at once."""
        self._skipped.set()

    async def _wait(self, waits: list[asyncio.Event], seconds: float) -> bool:
        """Wait up to `seconds` for one of `waits`; whether one was set. Once something this read model skips was
        appended, or its position moved unstored, only until that position is due to be stored
        (`checkpoint_every` after the last store): it then follows the head that soon."""
        if self.position <= self._stored and not self._skipped.is_set():
            started = time.monotonic()
            if not await any_set([*waits, self._skipped], seconds):
                return False
            if any(event.is_set() for event in waits):
                return True
            seconds -= time.monotonic() - started
        due_in = self._stored_at + self.checkpoint_every - time.monotonic()
        return await any_set(waits, max(min(seconds, due_in), 0.0))

    def wake(self) -> None:
        """Something was just appended that a reader is waiting for: read now, and store the position."""
        self._stored_at = float("-inf")
        self.current = False
        self._woken.set()

    def stored(self) -> tuple[str, int] | None:
        """The name and stored position of this read model's row in `projection_positions` while it is `current`
        (what a check that it is still at the head updates), else None."""
        if not self.current or self._generation is None:
            return None
        return tracking_name(self.model, self._generation), self._stored

    async def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Apply everything up to the stream head as it is now, position stored; return the position reached."""
        head = await self.source.head()
        while True:
            applied = await self.step()
            if progress:
                progress(self.position, head)
            if not applied or self.position >= head:
                break
        await self.step(checkpoint=True)
        return self.position

    async def step(self, checkpoint: bool = False) -> int:
        """Apply one batch; return how many stream positions it covered (0: nothing new).

        The read asks only for the subjects of this read model's events, and covers the messages of other
        subjects after them up to the head as it was, so the position reaches the head whatever was appended
        last. A batch with no event this read model reads moves only the position in memory; it is stored with
        the next batch that does, or after `checkpoint_every` seconds (skipping such messages again is harmless).
        A PostgreSQL connection is taken only to load the position or to write: a read that brings nothing costs
        PostgreSQL nothing (a checkout alone is a round trip, to check the connection)."""
        if self._generation is None:
            async with self.pool.connection() as conn:
                await self._load(conn)
        read = await self._read(self.position + 1)
        messages, through = read.messages, max(read.through, self.position)
        self.full = read.more  # more is waiting right after this batch
        if read.more:  # read the next batch while this one is applied
            ahead = self.source.read_through(through + 1, self._limit(), self.subjects)
            self._prefetch = (through + 1, asyncio.ensure_future(ahead))
        at_head = not self.full  # the read reached the stream's head as it was then
        batch, undecodable = _decode([m for m in messages if m.topic in self.model.topics])
        last = messages[-1] if messages else None
        covered = through - self.position
        due = time.monotonic() - self._stored_at >= self.checkpoint_every
        if not batch and not undecodable and not ((checkpoint or due) and through > self._stored):
            if covered:
                self.position = through
                if last is not None:
                    self._position_time = last.time
            return covered
        position = through
        event_time = last.time if last else self._position_time
        generation = self._generation
        name = tracking_name(self.model, generation)
        async with self.pool.connection() as conn, conn.transaction():
            if self.fixed_generation is None:
                # Holding this row shared keeps a rebuild from swapping generations mid-batch.
                cur = await conn.execute(
                    "select generation from read_model_generations where read_model = %s for share",
                    (self.model.name,),
                )
                row = await cur.fetchone()
                if row is None or row[0] != generation:
                    self._generation = None
                    return 0  # a rebuild swapped generations: start over on the new one
            cur = await conn.execute("select position from projection_positions where name = %s for update", (name,))
            row = await cur.fetchone()
            if row is None or row[0] != self._stored:
                self._generation = None
                return 0  # another runner moved it (or a swap dropped it): read again
            async with conn.cursor() as cur:
                failed = undecodable
                if batch:
                    failed = failed + await quarantine.apply_isolating(
                        cur, self.model, physical_tables(self.model, generation), batch
                    )
                for item, error in failed:
                    log.error(
                        "projection %s cannot apply event %s at position %d; quarantined: %s",
                        self.model.name,
                        item.topic,
                        item.position,
                        quarantine.describe(error),
                    )
                    await quarantine.record(cur, self.model, generation, item.position, item.topic, error)
                await cur.execute(
                    "update projection_positions set position = %s,"
                    " event_time = coalesce(%s::timestamptz, event_time), updated_at = now(),"
                    " checked_at = case when %s then now() else checked_at end where name = %s",
                    (position, event_time, at_head, name),
                )
            if self.before_commit is not None and messages:
                await self.before_commit(messages)
        self.position = self._stored = position
        self._position_time = event_time
        self._stored_at = time.monotonic()
        if batch and self.after_commit is not None:
            self.after_commit()
        return covered

    async def _read(self, start: int) -> Read:
        """The batch from `start` on: the one read ahead for it if there is one (a read ahead from elsewhere is
        left to finish on its own: another runner may share it)."""
        ahead, self._prefetch = self._prefetch, None
        if ahead is not None:
            at, task = ahead
            if at == start:
                return await task
            task.add_done_callback(_retrieved)
        return await self.source.read_through(start, self._limit(), self.subjects)

    def _limit(self) -> int:
        """How many messages to read next: while the last read left more right after it (behind the head), a
        replay's batch, read by consumer (source.py), else `batch_size`."""
        return max(self.batch_size, REPLAY_BATCH) if self.full else self.batch_size

    async def _load(self, conn) -> None:
        generation = self.fixed_generation or await active_generation(conn, self.model)
        cur = await conn.execute(
            "select position from projection_positions where name = %s", (tracking_name(self.model, generation),)
        )
        row = await cur.fetchone()
        await conn.commit()
        self._generation, self.position = generation, row[0] if row else 0
        self._stored = self.position


def _decode(messages: list[StoredMessage]) -> tuple[list[Envelope], list[tuple[StoredMessage, BaseException]]]:
    """The messages as events, and those that cannot be decoded (they are quarantined)."""
    batch, undecodable = [], []
    for m in messages:
        try:
            batch.append(Envelope(m.position, m.time, m.topic, decode(m)))
        except Exception as exc:
            undecodable.append((m, exc))
    return batch, undecodable


def _retrieved(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()  # a read ahead nobody awaits: its failure is not worth a warning


async def any_set(events: Iterable[asyncio.Event], seconds: float) -> bool:
    """Wait until one of `events` is set, at most `seconds`; whether one was."""
    events = list(events)
    if any(e.is_set() for e in events):
        return True
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return any(e.is_set() for e in events)


async def wait_for_position(pool: AsyncConnectionPool, model: ReadModel, position: int, timeout: float = 5.0) -> bool:
    """Wait until the read model in service reflects `position` (read-your-writes for the API)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        async with pool.connection() as conn:
            reached, _ = await position_of(conn, model)
        if reached >= position:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.02)
