"""Reads the event stream in batches, straight from JetStream (batched direct get).

Direct get needs no consumer state on the server, so a projection can start
from any position, any number of times, and a NATS restart costs nothing more
than a reconnect. A read may name a subject filter (`next_by_subj`): a read model
of aggregate events never receives a usage message. The runners of one process
reading the same subjects read at about the same place, so the source keeps what
it read last per filter and hands it to each of them: a message crosses the wire
(and is parsed) once per filter and process, not once per read model.
"""

from __future__ import annotations

import asyncio
import re
from bisect import bisect_left
from datetime import datetime

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC

RECENT = 4096  # messages kept for the other runners
CATCH_UP_TURNS = 3  # event-loop turns that parse and hand over what already arrived before a read counts as stalled


class StoredMessage(msgspec.Struct, frozen=True):
    position: int  # stream sequence
    time: datetime  # when JetStream stored it
    topic: str
    originator_id: str
    originator_version: int
    body: bytes


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


# A header line: a name (printable ASCII but ":", no whitespace; may be empty), ":", the value; the space around
# either is left out.
_HEADER_LINE = re.compile(r"^[ \t]*([!-9;-~]*)[ \t]*:[ \t]*([^\r\n]*)", re.MULTILINE)


def _parse_header_lines(raw: bytes) -> dict[str, str]:
    """A message's header lines as nats-py parses them (`Client._parse_header_lines`: lines without a ':' or whose
    name is not an ASCII token are left out; the last of a name wins), in one pass of a regular expression instead
    of Python steps per line and per character: a replay parses millions of headers, and nats-py's parse was most
    of the cost of reading a message."""
    return {name: value.rstrip() for name, value in _HEADER_LINE.findall(raw.decode("utf-8", "replace"))}


class StreamSource:
    def __init__(self, nc: NATS, stream: str):
        self.nc = nc
        if hasattr(type(nc), "_parse_header_lines"):
            nc._parse_header_lines = _parse_header_lines  # this client's messages, parsed the same, faster
        self.stream = stream
        self._api = f"$JS.API.DIRECT.GET.{stream}"
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
                head = await self.head()
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
        """The messages of one direct get batch, and whether the server holds more of `subjects` after them."""
        messages: list[StoredMessage] = []
        done = asyncio.get_running_loop().create_future()

        async def on_message(msg: Msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None:
                if done.done():
                    return
                if status == "204":  # the batch's end: how many of the subjects asked for are left after it
                    done.set_result(int(headers.get("Nats-Num-Pending", "0") or 0) > 0)
                elif status == "404":  # none from `seq` on
                    done.set_result(False)
                else:
                    done.set_exception(RuntimeError(f"direct get from {self.stream} failed: {status} {headers}"))
                return
            messages.append(
                StoredMessage(
                    position=int(headers["Nats-Sequence"]),
                    time=_parse_time(headers["Nats-Time-Stamp"]),
                    topic=headers.get(HEADER_TOPIC, ""),
                    originator_id=headers.get(HEADER_ORIGINATOR_ID, ""),
                    originator_version=int(headers.get(HEADER_ORIGINATOR_VERSION, "0") or 0),
                    body=msg.data,
                )
            )

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_message, pending_msgs_limit=limit + 16)
        try:
            request: dict[str, object] = {"seq": start, "batch": limit}
            if subjects is not None:
                request["next_by_subj"] = subjects
            await self.nc.publish(self._api, msgspec.json.encode(request), reply=inbox)
            await _until_done(done, messages, timeout)
        finally:
            await sub.unsubscribe()
        return messages, done.result()

    async def head(self) -> int:
        """The stream's last sequence (0 when empty)."""
        return (await self.state())[0]

    async def state(self) -> tuple[int, int, int]:
        """The stream's last sequence (0 when empty), the bytes it holds and its limit (-1: none)."""
        reply = await self.nc.request(f"$JS.API.STREAM.INFO.{self.stream}", b"", timeout=5)
        info = msgspec.json.decode(reply.data)
        if "error" in info:
            raise RuntimeError(f"stream info for {self.stream} failed: {info['error'].get('description')}")
        return int(info["state"]["last_seq"]), int(info["state"]["bytes"]), int(info["config"].get("max_bytes", -1))


async def _until_done(done: asyncio.Future, arrived: list, timeout: float) -> None:
    """Wait for `done` while `arrived` keeps growing; TimeoutError after `timeout` seconds without growth.

    A timer can fire in the same event-loop turn as the data that was due before it, ahead of the client's read
    task that parses it, so a few turns are given to that work before a quiet spell counts as a stall."""
    while True:
        seen = len(arrived)
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return
        except asyncio.TimeoutError:
            for _ in range(CATCH_UP_TURNS):
                await asyncio.sleep(0)
            if done.done():
                done.result()
                return
            if len(arrived) == seen:
                raise


def _parse_time(value: str) -> datetime:
    # JetStream sends nanoseconds; Python keeps microseconds.
    value = value.rstrip("Z")
    if "." in value:
        whole, frac = value.split(".", 1)
        value = f"{whole}.{frac[:6]}"
    return datetime.fromisoformat(value + "+00:00")
