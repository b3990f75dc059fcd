"""Reads the event stream in batches, straight from JetStream (batched direct get).

Direct get needs no consumer state on the server, so a projection can start
from any position, any number of times, and a NATS restart costs nothing more
than a reconnect.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from nats.aio.client import Client as NATS

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC



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

    async def read(self, start: int, limit: int = 1000, timeout: float = 5.0) -> list[StoredMessage]:
        """Up to `limit` messages from stream sequence `start` on; [] when there are none yet."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(self._api, msgspec.json.encode({"seq": start, "batch": limit}), reply=inbox)
            messages: list[StoredMessage] = []
            while True:
                msg = await sub.next_msg(timeout=timeout)
                headers: dict[str, Any] = msg.headers or {}
                status = headers.get("Status")
                if status is not None:
                    if status in ("204", "404"):
                        return messages
                    raise RuntimeError(f"direct get from {self.stream} failed: {status} {headers}")
                messages.append(StoredMessage(
                    position=int(headers["Nats-Sequence"]),
                    time=_parse_time(headers["Nats-Time-Stamp"]),
                    topic=headers.get(HEADER_TOPIC, ""),
                    originator_id=headers.get(HEADER_ORIGINATOR_ID, ""),
                    originator_version=int(headers.get(HEADER_ORIGINATOR_VERSION, "0") or 0),
                    body=msg.data,
                ))
        finally:
            await sub.unsubscribe()

    async def head(self) -> int:
        """The stream's last sequence (0 when empty)."""
        reply = await self.nc.request(f"$JS.API.STREAM.INFO.{self.stream}", b"", timeout=5)
        info = msgspec.json.decode(reply.data)
        if "error" in info:
            raise RuntimeError(f"stream info for {self.stream} failed: {info['error'].get('description')}")
        return int(info["state"]["last_seq"])


def _parse_time(value: str) -> datetime:
    # JetStream sends nanoseconds; Python keeps microseconds.
    value = value.rstrip("Z")
    if "." in value:
        whole, frac = value.split(".", 1)
        value = f"{whole}.{frac[:6]}"
    return datetime.fromisoformat(value + "+00:00")
