"""uvicorn on the gathering protocol (as `mesh up` runs it), spoken to over a real socket."""

import asyncio

import pytest
import uvicorn

from api.embedded import free_port
from api.http_protocol import GatheringHttpToolsProtocol

BODY = b'{"ok": true}'


class App:
    """A plain answer, a streamed one whose pieces the test releases one at a time, and a closing one."""

    def __init__(self) -> None:
        self.release: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def __call__(self, scope, receive, send) -> None:
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            while (piece := await self.release.get()) is not None:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
        if scope["path"] == "/close":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


@pytest.fixture
async def served():
    app = App()
    port = free_port("127.0.0.1")
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=GatheringHttpToolsProtocol,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the server did not start"
        await asyncio.sleep(0.01)
    yield app, port
    server.should_exit = True
    await asyncio.wait_for(task, 10)


async def _read_answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    return head, await asyncio.wait_for(reader.readexactly(length), 5)


async def test_answers_on_one_kept_alive_connection_come_whole_and_in_order(served):
    _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = b"POST /plain HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    writer.write(request * 3)  # pipelined
    for _ in range(3):
        head, body = await _read_answer(reader)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and body == BODY
    writer.write(b"HEAD /plain HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # a head alone still leaves
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    writer.write(request)
    assert (await _read_answer(reader))[1] == BODY
    writer.close()


async def test_a_streamed_answer_leaves_piece_by_piece(served):
    app, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)  # before any piece is released
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"transfer-encoding: chunked" in head
    for piece in (b"data: 1\n\n", b"data: 2\n\n"):
        await app.release.put(piece)
        chunk = await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)  # each arrives before the next is sent
        assert chunk == b"%x\r\n%s\r\n" % (len(piece), piece)
    await app.release.put(None)
    assert await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5) == b"0\r\n\r\n"
    writer.close()


async def test_an_answer_that_closes_the_connection_is_sent_whole_first(served):
    _, port = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /close HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
    head, body = await _read_answer(reader)
    assert b"connection: close" in head and body == BODY
    assert await asyncio.wait_for(reader.read(), 5) == b""  # then the server closed it
    writer.close()
