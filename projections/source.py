"""Reads the event stream in batches for the read models, by the event log's batched direct get
(commands/event_log.py).

Direct get needs no consumer state on the server, so a projection can start
from any position, any number of times, and a NATS restart costs nothing more
than a reconnect. A read may name a subject filter (`next_by_subj`): a read model
of aggregate events never receives a usage message. The runners of one process
reading the same subjects read at about the same place, so the source keeps what
it read last per filter and hands it to each of them: a message crosses the wire
(and is parsed) once per filter and process, not once per read model.

A read of REPLAY_BATCH messages or more is a replay's, behind the head (a rebuild, an audit, a catch-up, a read
model that fell behind), and goes by a consumer per filter instead (`event_log.RangeReader`), which costs NATS a
third of a direct get. A read of fewer, at the head, lets that consumer go (one still reading makes another).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left

import msgspec
from nats.aio.client import Client as NATS

from commands import event_log
from commands.event_log import StoredMessage

# Messages read and applied in one transaction when replaying the log from far behind: fewer round trips and
# commits per event than the batches of a runner at the head, which stay small to keep latency low.
REPLAY_BATCH = 5000
RECENT = 2 * REPLAY_BATCH  # messages kept for the other runners (a replay's batch whole)


class Read(msgspec.Struct, frozen=True):
    """What one read returned: the messages (of the subjects asked for), and the position it covered: every
    message of those subjects up to `through` is among `messages` or before the read's start."""

    messages: list[StoredMessage]
    through: int
    more: bool = False  # more of those subjects are stored after `through` (a whole batch, or one cut short)


class _Window(msgspec.Struct):
    """The messages of one subject filter read last: all of them from `start` to `through`, oldest first."""

    start: int
    through: int
    messages: list[StoredMessage]
    more: bool


class StreamSource:
    def __init__(self, nc: NATS, stream: str):
        self.nc = nc
        event_log.parse_headers_faster(nc)  # this client's other messages
        self.stream = stream
        self._readers: dict[str | None, event_log.RangeReader] = {}  # a replay's, per subject filter
        self._windows: dict[str | None, _Window] = {}  # per subject filter (None: the whole stream)
        self._fetching: dict[tuple[str | None, int, int], asyncio.Future] = {}

    async def read(self, start: int, limit: int = 1000, timeout: float = 5.0) -> list[StoredMessage]:
        """Up to `limit` messages from stream sequence `start` on; [] when there are none yet. Fails with
        TimeoutError when `timeout` seconds pass with nothing new arriving (not when the whole batch takes longer:
        the projection worker runs at idle priority, and on a saturated CPU it reads a batch for many seconds)."""
        return (await self.read_through(start, limit, None, timeout)).messages

    async def read_through(
        self, start: int, limit: int = 1000, subjects: str | None = None, timeout: float = 5.0
    ) -> Read:
        """Up to `limit` messages of `subjects` (a subject filter, None: all) from stream sequence `start` on, and
        how far that covers the stream: to the last message when `limit` came or the server says more are left,
        else to the stream's head as it was when the read began (the skipped messages after the last one count as
        read: a read model's position is a stream sequence, and reaches the head whatever was appended last)."""
        window = self._windows.get(subjects)
        if window is not None and window.start <= start <= window.through:
            messages = window.messages
            i = bisect_left(messages, start, key=lambda m: m.position)
            taken = messages[i : i + limit]
            if len(taken) == limit:
                return Read(taken, taken[-1].position, True)
            return Read(taken, window.through, window.more)
        key = (subjects, start, limit)
        pending = self._fetching.get(key)
        if pending is not None:  # another runner is reading just that: share its answer
            return await asyncio.shield(pending)
        pending = self._fetching[key] = asyncio.get_running_loop().create_future()
        try:
            if subjects is None:
                messages, more = await self._fetch(start, limit, timeout)
                through = messages[-1].position if messages else start - 1
            else:
                # the head first: every message of `subjects` stored up to it is then in an answer that ends with
                # none of them left (a batch cut short by the server's byte limit says how many are left)
                head, replicas = await self._head_and_replicas()
                if replicas > 1:
                    # a direct get may be answered by a follower still behind the head the leader reported: a
                    # filtered answer could end before messages it does not hold yet, and they would count as
                    # read. Read every subject instead (the runner skips the others): covered as far as it came
                    messages, more = await self._fetch(start, limit, timeout)
                    through = messages[-1].position if messages else start - 1
                else:
                    messages, more = await self._fetch(start, limit, timeout, subjects)
                    last = messages[-1].position if messages else start - 1
                    through = last if len(messages) == limit or more else max(head, last)
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._fetching[key]
        read = Read(messages, through, more or len(messages) == limit)
        self._keep(subjects, start, read)
        pending.set_result(read)
        return read

    def _keep(self, subjects: str | None, start: int, read: Read) -> None:
        """Keep what was read for the other runners of the same subjects (at most RECENT messages)."""
        if read.through < start:
            return
        window = self._windows.get(subjects)
        if window is not None and window.through + 1 == start:
            window.messages = window.messages + read.messages
            window.through, window.more = read.through, read.more
        else:
            window = self._windows[subjects] = _Window(start, read.through, list(read.messages), read.more)
        if len(window.messages) > RECENT:
            window.messages = window.messages[-RECENT:]
            window.start = window.messages[0].position

    async def _fetch(
        self, start: int, limit: int, timeout: float, subjects: str | None = None
    ) -> tuple[list[StoredMessage], bool]:
        """The messages of one batch, and whether the server holds more of `subjects` after them."""
        if limit < REPLAY_BATCH:  # at the head: a replay of these subjects is over
            reader = self._readers.pop(subjects, None)
            if reader is not None:
                await reader.close()
            return await event_log.read_batch(self.nc, self.stream, start, limit, subjects, timeout)
        reader = self._readers.get(subjects)
        if reader is None:
            reader = self._readers[subjects] = event_log.RangeReader(self.nc, self.stream, subjects)
        return await reader.read(start, limit, timeout)

    async def close(self) -> None:
        """Let go of a replay's consumers (the server drops them once unused anyway)."""
        readers, self._readers = self._readers, {}
        for reader in readers.values():
            await reader.close()

    async def head(self) -> int:
        """The stream's last sequence (0 when empty)."""
        return await event_log.head(self.nc, self.stream)

    async def state(self) -> tuple[int, int, int]:
        """The stream's last sequence (0 when empty), the bytes it holds and its limit (-1: none)."""
        info = await event_log.info(self.nc, self.stream)
        return int(info["state"]["last_seq"]), int(info["state"]["bytes"]), int(info["config"].get("max_bytes", -1))

    async def _head_and_replicas(self) -> tuple[int, int]:
        info = await event_log.info(self.nc, self.stream)
        return int(info["state"]["last_seq"]), int(info["config"].get("num_replicas", 1))
