"""The lean HTTP/1.1 transport under the providers: keep-alive reuse, closed connections, chunked bodies."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.transport import LeanTransport, Target


class Server:
    """A raw HTTP/1.1 server on loopback that counts connections and can misbehave on purpose."""

    def __init__(self):
        self.connections = 0
        self.close_after_each = False  # answer with "connection: close" and hang up
        self.chunked = False
        self.staged = False  # chunked, two chunks in one write and a third one a moment later

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length)
                if self.staged:
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
                        b"b\r\ndata: one\n\n\r\nb\r\ndata: two\n\n\r\n"
                    )
                    await writer.drain()
                    await asyncio.sleep(0.05)
                    writer.write(b"d\r\ndata: three\n\n\r\n0\r\n\r\n")
                elif self.chunked:
                    parts = [b"data: one\n\n", b"data: two\n\n"]
                    payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
                    writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + payload)
                else:
                    close = b"connection: close\r\n" if self.close_after_each else b""
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), close, body))
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


@pytest.fixture
async def server():
    s = Server()
    listener = await asyncio.start_server(s.handle, "127.0.0.1", 0)
    s.url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    yield s
    listener.close()


async def test_keep_alive_connections_are_reused(server):
    async with httpx.AsyncClient(transport=LeanTransport(), base_url=server.url) as client:
        for i in range(20):
            response = await client.post("/echo", content=b"ping %d" % i)
            assert response.status_code == 200 and response.content == b"ping %d" % i
    assert server.connections == 1


async def test_connection_close_and_concurrency(server):
    server.close_after_each = True
    async with httpx.AsyncClient(transport=LeanTransport(), base_url=server.url) as client:
        responses = await asyncio.gather(*(client.post("/echo", content=b"x%d" % i) for i in range(10)))
    assert [r.content for r in responses] == [b"x%d" % i for i in range(10)]
    assert server.connections == 10


async def test_a_kept_alive_connection_the_server_dropped_is_replaced(server):
    transport = LeanTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server.url) as client:
        assert (await client.post("/echo", content=b"a")).content == b"a"
        for connection in transport._idle[("127.0.0.1", int(server.url.rsplit(":", 1)[1]), False)]:
            connection.transport.abort()  # as if the upstream had closed it meanwhile
        assert (await client.post("/echo", content=b"b")).content == b"b"
    assert server.connections == 2


async def test_chunked_streams_arrive_in_pieces(server):
    server.chunked = True
    async with httpx.AsyncClient(transport=LeanTransport(), base_url=server.url) as client:
        async with client.stream("POST", "/sse", content=b"{}") as response:
            lines = [line async for line in response.aiter_lines() if line]
    assert lines == ["data: one", "data: two"]


async def test_what_arrived_together_is_one_piece_and_nothing_waits_for_more(server):
    server.staged = True
    port = int(server.url.rsplit(":", 1)[1])
    response = await LeanTransport().open(
        b"POST",
        Target(f"{server.url}/sse"),
        f"host: 127.0.0.1:{port}\r\n".encode(),
        b"{}",
        connect_timeout=1,
        read_timeout=1,
    )
    pieces = [piece async for piece in response.iter_chunks()]
    assert pieces == [b"data: one\n\ndata: two\n\n", b"data: three\n\n"]


async def test_connect_failures_are_httpx_errors():
    async with httpx.AsyncClient(transport=LeanTransport(), base_url="http://127.0.0.1:9") as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/")
