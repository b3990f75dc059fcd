"""A lean HTTP/1.1 client for the upstreams: pooled keep-alive connections, asyncio protocols, httptools parsing.

The providers call `LeanTransport.request` / `open` directly: one prebuilt header block, one write, one
timer per wait. httpx's client (request building, URL merging, cookies, httpcore's pool walking every
connection with a syscall each) costs more than everything else the gateway does for a request
(bench/gateway.py --profile shows it); this does only the work a request needs. `LeanTransport` is also an httpx
transport, for code that wants an `httpx.AsyncClient` on the same kind of pool.
TLS (https://) runs over the same protocol with asyncio's SSL support.
"""

from __future__ import annotations

import asyncio
import copy
import ssl
from collections import deque
from typing import AsyncIterator
from urllib.parse import urlsplit

import httptools
import httpx

_MAX_IDLE = 128


class UpstreamTimeout(Exception):
    """The upstream did not connect or answer in time."""


class UpstreamClosed(Exception):
    """The connection failed or the upstream closed it mid-response."""


class UpstreamUnreachable(UpstreamClosed):
    """No connection could be made."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time and hands its parts to the waiting reader."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.error: Exception | None = None
        self._reset()

    def _reset(self) -> None:
        self.error = None
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False
        self.chunks: deque[bytes] = deque()
        self.waiter: asyncio.Future | None = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamClosed(f"bad HTTP from the upstream: {exc}"))
            self.close()
            return
        if self.chunks or self.headers_done:
            self._wake()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.complete:
            self._fail(UpstreamClosed("the upstream closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is done
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # for the reader
    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        self.error = exc
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def wait(self, timeout: float | None) -> None:
        """Until something new arrived (or the deadline passes)."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("the upstream did not answer in time"))


class LeanResponse:
    """A response whose headers have arrived. Read the body whole (`read`) or in pieces (`iter_chunks`);
    `close` returns the connection to the pool if the body was read to the end."""

    def __init__(self, transport: "LeanTransport", key: tuple, connection: _Connection, read_timeout: float | None):
        self._transport, self._key, self._connection = transport, key, connection
        self._read_timeout = read_timeout
        self.status = connection.status
        self.headers = connection.headers
        self._released = False

    async def read(self) -> bytes:
        connection = self._connection
        while not connection.complete:
            await connection.wait(self._read_timeout)
        body = b"".join(connection.chunks)
        connection.chunks.clear()
        self.close()
        return body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives: whatever came in since the last piece, in one piece."""
        connection = self._connection
        chunks = connection.chunks
        while True:
            if chunks:
                piece = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                yield piece
            elif connection.complete:
                return
            else:
                await connection.wait(self._read_timeout)

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if self._released:
            return
        self._released = True
        connection = self._connection
        if connection.complete and connection.keep_alive and not connection.chunks and connection.reusable:
            self._transport._release(self._key, connection)
        else:
            connection.close()


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, max_idle_per_host: int = _MAX_IDLE, ssl_context: ssl.SSLContext | None = None):
        self.max_idle = max_idle_per_host
        self._ssl = ssl_context
        self._idle: dict[tuple, deque[_Connection]] = {}

    async def open(
        self,
        method: bytes,
        url: "Target",
        head: bytes,
        body: bytes,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> LeanResponse:
        """Send a request and wait for the response's headers. `head` holds the header lines after the request
        line (each ending in CRLF, content-length excluded). A kept-alive connection that the upstream had
        already closed (nothing came back on it) is replaced once; a request that may have run is never resent."""
        payload = b"%s %s HTTP/1.1\r\n%scontent-length: %d\r\n\r\n%s" % (method, url.target, head, len(body), body)
        while True:
            connection, reused = await self._connect(url, connect_timeout)
            connection._reset()
            connection.transport.write(payload)
            try:
                while not connection.headers_done:
                    await connection.wait(read_timeout)
            except UpstreamClosed:
                connection.close()
                if reused and not connection.received:
                    continue
                raise
            except BaseException:
                connection.close()
                raise
            return LeanResponse(self, url.key, connection, read_timeout)

    async def request(
        self,
        method: bytes,
        url: "Target",
        head: bytes,
        body: bytes,
        *,
        connect_timeout: float | None,
        timeout: float | None,
    ) -> tuple[int, bytes]:
        """A whole request: (status, body)."""
        response = await self.open(method, url, head, body, connect_timeout=connect_timeout, read_timeout=timeout)
        try:
            return response.status, await response.read()
        finally:
            response.close()

    async def _connect(self, url: "Target", timeout: float | None) -> tuple[_Connection, bool]:
        idle = self._idle.get(url.key)
        while idle:
            connection = idle.pop()
            if connection.reusable:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        context = None
        if url.tls:
            context = self._ssl = self._ssl or ssl.create_default_context()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, url.host, url.port, ssl=context, server_hostname=url.host if url.tls else None
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"could not connect to {url.host}:{url.port} in time") from None
        except OSError as exc:
            raise UpstreamUnreachable(f"could not connect to {url.host}:{url.port}: {exc}") from None
        return connection, False

    def _release(self, key: tuple, connection: _Connection) -> None:
        idle = self._idle.setdefault(key, deque())
        if len(idle) < self.max_idle:
            idle.append(connection)
        else:
            connection.close()

    # httpx.AsyncBaseTransport, for an httpx.AsyncClient mounted on this pool
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        url = Target(str(request.url))
        head = b"".join(
            name + b": " + value + b"\r\n" for name, value in request.headers.raw if name.lower() != b"content-length"
        )
        try:
            response = await self.open(
                request.method.encode(),
                url,
                head,
                await request.aread(),
                connect_timeout=timeouts.get("connect"),
                read_timeout=timeouts.get("read"),
            )
        except UpstreamTimeout as exc:
            raise httpx.ReadTimeout(str(exc)) from None
        except UpstreamUnreachable as exc:
            raise httpx.ConnectError(str(exc)) from None
        except UpstreamClosed as exc:
            raise httpx.RemoteProtocolError(str(exc)) from None
        return httpx.Response(
            response.status,
            headers=response.headers,
            stream=_HttpxBody(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().close()


class Target:
    """A parsed upstream URL: where to connect, and the request target to send."""

    __slots__ = ("host", "port", "tls", "target", "key", "authority")

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.tls else 80)
        self.target = ((parts.path or "/") + (f"?{parts.query}" if parts.query else "")).encode()
        self.key = (self.host, self.port, self.tls)
        default_port = parts.port is None or parts.port == (443 if self.tls else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 literal keeps its brackets
        self.authority = host if default_port else f"{host}:{self.port}"  # for the Host header

    def join(self, path: str) -> "Target":
        """This URL (a base URL, without a query) with `path` (which may carry one) appended."""
        joined = copy.copy(self)
        joined.target = self.target.rstrip(b"/") + path.encode()
        return joined


class _HttpxBody(httpx.AsyncByteStream):
    def __init__(self, response: LeanResponse):
        self.response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self.response.iter_chunks():
                yield chunk
        except UpstreamTimeout as exc:
            raise httpx.ReadTimeout(str(exc)) from None
        except UpstreamClosed as exc:
            raise httpx.RemoteProtocolError(str(exc)) from None

    async def aclose(self) -> None:
        self.response.close()
