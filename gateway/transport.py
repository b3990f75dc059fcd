"""A lean HTTP/1.1 transport for httpx: keep-alive connections over asyncio streams, parsed by httptools.

httpx stays the client API; this replaces httpcore's connection pool, whose bookkeeping walks every
connection (with a syscall each) on every request and dominated the gateway's CPU under load
(bench/gateway.py). Plain http:// upstreams use it; https:// ones keep httpx's own transport.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import AsyncIterator

import httptools
import httpx


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    def close(self) -> None:
        self.writer.close()


class _Response:
    """Parser callbacks for one response; body chunks are queued for the reader."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = asyncio.Event()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.parser: httptools.HttpResponseParser | None = None
        self.keep_alive = False  # read at the end of the headers: llhttp forgets it once the message is done

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()
        self.headers_done.set()

    def on_body(self, body: bytes) -> None:
        self.chunks.put_nowait(body)

    def on_message_complete(self) -> None:
        self.chunks.put_nowait(None)


class _Body(httpx.AsyncByteStream):
    def __init__(self, transport: "LeanTransport", key: tuple, connection: _Connection, parser, state: _Response,
                 read_timeout: float | None):
        self.transport, self.key, self.connection = transport, key, connection
        self.parser, self.state, self.read_timeout = parser, state, read_timeout
        self.done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            while True:
                while not self.state.chunks.empty():
                    chunk = self.state.chunks.get_nowait()
                    if chunk is None:
                        self.done = True
                        return
                    yield chunk
                data = await _read(self.connection, self.read_timeout)
                if not data:
                    raise httpx.RemoteProtocolError("the upstream closed the connection mid-response")
                self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            raise httpx.RemoteProtocolError(f"bad HTTP from the upstream: {exc}") from None

    async def aclose(self) -> None:
        if self.done and self.state.keep_alive:
            self.transport._release(self.key, self.connection)
        else:
            self.connection.close()


async def _read(connection: _Connection, timeout: float | None) -> bytes:
    try:
        return await asyncio.wait_for(connection.reader.read(65536), timeout)
    except asyncio.TimeoutError:
        connection.close()
        raise httpx.ReadTimeout("the upstream did not answer in time") from None
    except OSError as exc:
        connection.close()
        raise httpx.ReadError(str(exc)) from None


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle_per_host: int = 128):
        self.max_idle = max_idle_per_host
        self._idle: dict[tuple, deque[_Connection]] = {}

    async def _connect(self, key: tuple, timeout: float | None) -> tuple[_Connection, bool]:
        """A connection to the host, and whether it is a kept-alive one (which the upstream may have closed)."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection, True
            connection.close()
        host, port = key
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"could not connect to {host}:{port} in time") from None
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from None
        return _Connection(reader, writer), False

    def _release(self, key: tuple, connection: _Connection) -> None:
        idle = self._idle.setdefault(key, deque())
        if len(idle) < self.max_idle:
            idle.append(connection)
        else:
            connection.close()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = request.url
        key = (url.host, url.port or 80)
        body = await request.aread()
        head = [f"{request.method} {url.raw_path.decode()} HTTP/1.1\r\n".encode()]
        head.extend(name + b": " + value + b"\r\n" for name, value in request.headers.raw)
        if b"content-length" not in {name.lower() for name, _ in request.headers.raw}:
            head.append(b"content-length: " + str(len(body)).encode() + b"\r\n")
        payload = b"".join(head) + b"\r\n" + body
        while True:
            connection, reused = await self._connect(key, timeouts.get("connect"))
            state = _Response()
            parser = state.parser = httptools.HttpResponseParser(state)
            received = False
            try:
                connection.writer.write(payload)
                await connection.writer.drain()
                while not state.headers_done.is_set():
                    data = await _read(connection, timeouts.get("read"))
                    if not data:
                        raise httpx.RemoteProtocolError("the upstream closed the connection")
                    received = True
                    parser.feed_data(data)
            except (httpx.RemoteProtocolError, httpx.ReadError, OSError):
                connection.close()
                if reused and not received:
                    continue  # a kept-alive connection the upstream had already closed: the request never ran
                raise
            except httptools.HttpParserError as exc:
                connection.close()
                raise httpx.RemoteProtocolError(f"bad HTTP from the upstream: {exc}") from None
            stream = _Body(self, key, connection, parser, state, timeouts.get("read"))
            return httpx.Response(parser.get_status_code(), headers=state.headers, stream=stream,
                                  extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()
