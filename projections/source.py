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
import weakref
from bisect import bisect_left
from datetime import datetime

import msgspec
from nats.aio.client import Client as NATS

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


class _Batch:
    """One direct get batch as it arrives: each message's raw header block and body, parsed once it is whole."""

    __slots__ = ("raw", "done", "failed")

    def __init__(self, done: asyncio.Future):
        self.raw: list[tuple[bytes, bytes]] = []
        self.done = done  # the batch's end: whether more of the subjects asked for are stored after it
        self.failed: BaseException | None = None  # a message without the stream's headers


# Per client: the inboxes of the batches being read. Their messages are taken from the client as it parses them,
# before it builds a message object, parses its headers and queues it for a callback: a replay reads millions.
_BATCHES: weakref.WeakKeyDictionary[NATS, dict[bytes, _Batch]] = weakref.WeakKeyDictionary()


def _batches_of(nc: NATS) -> dict[bytes, _Batch]:
    batches = _BATCHES.get(nc)
    if batches is None:
        batches = _BATCHES[nc] = {}
        deliver = nc._process_msg

        async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes | None) -> None:
            batch = batches.get(subject)
            if batch is None:
                await deliver(sid, subject, reply, data, headers)
            elif headers is not None and headers.startswith(_PLAIN_HEADERS) and b"Status" not in headers:
                batch.raw.append((headers, data))
            elif not batch.done.done():
                _other(batch, data, headers, await nc._process_headers(headers) or {})

        nc._process_msg = process_msg  # type: ignore[method-assign]
    return batches


_PLAIN_HEADERS = b"NATS/1.0\r\n"  # a message's header block without an inline status


def _other(batch: _Batch, data: bytes, raw: bytes | None, headers: dict[str, str]) -> None:
    """A message of a batch whose header block the fast test left to nats-py: its end, why it failed, or (headers
    that merely contain the word) a stored message."""
    status = headers.get("Status")
    if status == "204":  # the batch's end: how many of the subjects asked for are left after it
        batch.done.set_result(int(headers.get("Nats-Num-Pending", "0") or 0) > 0)
    elif status == "404":  # none from `seq` on
        batch.done.set_result(False)
    elif status is not None:
        batch.done.set_exception(RuntimeError(f"direct get failed: {status} {headers}"))
    elif raw is not None and "Nats-Sequence" in headers:
        batch.raw.append((raw, data))
    else:
        batch.failed = RuntimeError(f"direct get answered a message without the stream's headers: {headers}")


def _header_fields(raw: bytes) -> dict[bytes, bytes]:
    """A header block's lines as name and value, each stripped of the space around it (the last of a name wins).
    For the names the stream sets it agrees with nats-py's parse (tests/unit/test_source_headers.py), in a few
    Python steps per line instead of a regular expression over the decoded block."""
    fields = {}
    for line in raw.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields[name.strip(b" \t")] = value.strip(b" \t")
    return fields


def _stored(headers: bytes, body: bytes) -> StoredMessage:
    fields = _header_fields(headers)
    return StoredMessage(
        position=int(fields[b"Nats-Sequence"]),
        time=_parse_time(fields[b"Nats-Time-Stamp"].decode()),
        topic=fields.get(_TOPIC, b"").decode("utf-8", "replace"),
        originator_id=fields.get(_ORIGINATOR_ID, b"").decode("utf-8", "replace"),
        originator_version=int(fields.get(_ORIGINATOR_VERSION, b"0") or 0),
        body=body,
    )


_TOPIC, _ORIGINATOR_ID, _ORIGINATOR_VERSION = (
    name.encode() for name in (HEADER_TOPIC, HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION)
)


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
        """The messages of one direct get batch, and whether the server holds more of `subjects` after them."""
        inbox = self.nc.new_inbox()
        batch = _Batch(asyncio.get_running_loop().create_future())
        batches = _batches_of(self.nc)
        key = inbox.encode()
        batches[key] = batch
        sub = await self.nc.subscribe(inbox, pending_msgs_limit=limit + 16)
        try:
            request: dict[str, object] = {"seq": start, "batch": limit}
            if subjects is not None:
                request["next_by_subj"] = subjects
            await self.nc.publish(self._api, msgspec.json.encode(request), reply=inbox)
            await _until_done(batch.done, batch.raw, timeout)
        finally:
            del batches[key]
            await sub.unsubscribe()
        if batch.failed is not None:
            raise batch.failed
        return [_stored(headers, body) for headers, body in batch.raw], batch.done.result()

    async def head(self) -> int:
        """The stream's last sequence (0 when empty)."""
        return (await self.state())[0]

    async def state(self) -> tuple[int, int, int]:
        """The stream's last sequence (0 when empty), the bytes it holds and its limit (-1: none)."""
        info = await self._info()
        return int(info["state"]["last_seq"]), int(info["state"]["bytes"]), int(info["config"].get("max_bytes", -1))

    async def _head_and_replicas(self) -> tuple[int, int]:
        info = await self._info()
        return int(info["state"]["last_seq"]), int(info["config"].get("num_replicas", 1))

    async def _info(self) -> dict:
        reply = await self.nc.request(f"$JS.API.STREAM.INFO.{self.stream}", b"", timeout=5)
        info = msgspec.json.decode(reply.data)
        if "error" in info:
            raise RuntimeError(f"stream info for {self.stream} failed: {info['error'].get('description')}")
        return info


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
