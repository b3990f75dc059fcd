"""Log exports: at most one at a time per account, each on a PostgreSQL connection of its own, ended when its
client stops reading.

An export streams for as long as its client reads, holding a connection and a snapshot (a REPEATABLE READ
transaction) all along. On the request pool, a few clients that open an export and stop reading would take every
connection, and every token check and page would wait for one. So an export opens its own connection (the pool
never lends it), an account runs one export at a time and the process at most MAX_EXPORTS, and a write the
client has not taken within the idle timeout ends the export: its connection closes, its slot frees.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator
from uuid import UUID

from litestar.response import Stream

from api.log_entries import EXPORT_FORMATS
from api.services.as_of import AsOf
from api.services.errors import Busy

log = logging.getLogger("mesh.api")

MAX_EXPORTS = 10  # exports running at once in one process, each with a connection of its own (PostgreSQL: 200)
CONNECT_SECONDS = 5  # to open an export's connection
EXPORT_HEADERS = {  # what the export's answer carries beside its body
    "x-mesh-as-of-position": "the stream position the export reflects",
    "x-mesh-as-of-time": "the time of that event (ISO 8601), empty before the first",
    "content-disposition": "attachment; filename=mesh-logs.csv or .jsonl",
}


class ExportGate:
    """The accounts with an export running in this process: one each, MAX_EXPORTS in all."""

    def __init__(self, limit: int = MAX_EXPORTS):
        self.limit = limit
        self.running: set[UUID] = set()

    @contextmanager
    def hold(self, account_id: UUID) -> Iterator[None]:
        """A slot for the account's export while it runs, or Busy saying why there is none."""
        if account_id in self.running:
            raise Busy(
                "an export of this account is already running; one runs at a time: wait for it to finish "
                "(or close it) and try again",
                "export_in_progress",
            )
        if len(self.running) >= self.limit:
            raise Busy(
                f"{self.limit} exports are running on this server, the most it runs at once; try again shortly",
                "exports_busy",
            )
        self.running.add(account_id)
        try:
            yield
        finally:
            self.running.discard(account_id)


class ClientStalled(Exception):
    """The client took nothing for the idle timeout."""


class IdleTimedStream(Stream):
    """A streamed answer that ends when one write waits longer than `idle_seconds` for the client to read
    (the connection is closed), and closes its iterator however it ends (what the iterator holds is freed then,
    not when the garbage collector finds it)."""

    def __init__(self, content: Any, *, idle_seconds: float, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.idle_seconds = idle_seconds

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> Any:
        return _IdleTimed(super().to_asgi_response(*args, **kwargs), self.iterator, self.idle_seconds)


class _IdleTimed:
    def __init__(self, response: Any, iterator: Any, idle_seconds: float):
        self.response, self.iterator, self.idle_seconds = response, iterator, idle_seconds

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def timed_send(message: Any) -> None:
            try:
                async with asyncio.timeout(self.idle_seconds):
                    await send(message)  # waits while the client's socket is full
            except TimeoutError:
                raise ClientStalled from None

        try:
            await self.response(scope, receive, timed_send)
        except* ClientStalled:
            log.warning("%s ended: the client read nothing for %g s", scope.get("path"), self.idle_seconds)
        finally:
            close = getattr(self.iterator, "aclose", None)
            if close is not None:
                await close()


@dataclass(frozen=True)
class LogExport:
    """An export that started (it holds the account's slot and its connection): the position its rows are as of
    and its body. `response()` is the download, the same for the JSON API and the dashboard."""

    as_of: AsOf
    format: str  # a key of EXPORT_FORMATS
    lines: AsyncIterator[bytes]
    idle_seconds: float

    def response(self, **kwargs: Any) -> IdleTimedStream:
        headers = {
            "content-disposition": f'attachment; filename="mesh-logs.{self.format}"',
            "x-mesh-as-of-position": str(self.as_of.position),
            "x-mesh-as-of-time": self.as_of.time.isoformat() if self.as_of.time else "",
        }
        return IdleTimedStream(
            self.lines,
            idle_seconds=self.idle_seconds,
            media_type=EXPORT_FORMATS[self.format],
            headers=headers,
            **kwargs,
        )
