"""Reads the event stream in batches, straight from JetStream (batched direct get).

Direct get needs no consumer state on the server, so a projection can start
from any position, any number of times, and a NATS restart costs nothing more
than a reconnect. The runners of one process read the same stream at about the
same place, so the source keeps what it read last and hands it to each of them:
a message crosses the wire (and is parsed) once per process, not once per read model.
"""

from __future__ import annotations

import asyncio
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


class StreamSource:
    def __init__(self, nc: NATS, stream: str):
        self.nc = nc
        self.stream = stream
        self._api = f"$JS.API.DIRECT.GET.{stream}"
        self._recent: list[StoredMessage] = []  # contiguous positions, oldest first
        self._fetching: dict[tuple[int, int], asyncio.Future] = {}

    async def read(self, start: int, limit: int = 1000, timeout: float = 5.0) -> list[StoredMessage]:
        """Up to `limit` messages from stream sequence `start` on; [] when there are none yet. Fails with
        TimeoutError when `timeout` seconds pass with nothing new arriving (not when the whole batch takes longer:
        the projection worker runs at idle priority, and on a saturated CPU it reads a batch for many seconds)."""
        recent = self._recent
        if recent and recent[0].position <= start <= recent[-1].position:
            i = bisect_left(recent, start, key=lambda m: m.position)
            return recent[i : i + limit]
        key = (start, limit)
        pending = self._fetching.get(key)
        if pending is not None:  # another runner is reading just that: share its answer
            return await asyncio.shield(pending)
        pending = self._fetching[key] = asyncio.get_running_loop().create_future()
        try:
            messages = await self._fetch(start, limit, timeout)
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._fetching[key]
        if messages:
            if recent and recent[-1].position + 1 == start:
                self._recent = (recent + messages)[-RECENT:]
            else:
                self._recent = messages[-RECENT:]
        pending.set_result(messages)
        return messages

    async def _fetch(self, start: int, limit: int, timeout: float) -> list[StoredMessage]:
        messages: list[StoredMessage] = []
        done = asyncio.get_running_loop().create_future()

        async def on_message(msg: Msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None:
                if done.done():
                    return
                if status in ("204", "404"):
                    done.set_result(None)
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
            await self.nc.publish(self._api, msgspec.json.encode({"seq": start, "batch": limit}), reply=inbox)
            await _until_done(done, messages, timeout)
        finally:
            await sub.unsubscribe()
        return messages

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
