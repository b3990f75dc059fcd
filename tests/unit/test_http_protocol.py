"""The transport uvicorn writes through: what one turn of the event loop writes leaves in one send."""

import asyncio

from api.http_protocol import _GatheringTransport


class RecordingTransport:
    """Stands for the socket's transport: records each send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def _gathering() -> tuple[RecordingTransport, _GatheringTransport]:
    """A gathering transport on the running loop, and the recording one it sends through."""
    real = RecordingTransport()
    return real, _GatheringTransport(real, asyncio.get_running_loop())


async def _turn() -> None:
    """Let the event loop run the callbacks scheduled so far."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_a_head_and_body_written_in_one_turn_leave_in_one_send():
    real, transport = _gathering()
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert real.sent == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
    await _turn()
    assert real.sent == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]


async def test_pieces_written_in_different_turns_leave_as_they_come():
    real, transport = _gathering()
    transport.write(b"head")
    await _turn()
    assert real.sent == [b"head"]  # a streamed answer's head does not wait for its first piece
    transport.write(b"data: 1\n\n")
    await _turn()
    transport.write(b"data: 2\n\n")
    await _turn()
    assert real.sent == [b"head", b"data: 1\n\n", b"data: 2\n\n"]


async def test_flush_sends_at_once_and_leaves_nothing_for_the_end_of_the_turn():
    real, transport = _gathering()
    transport.writelines([b"a", b"b"])
    transport.write(b"c")
    transport.flush()
    assert real.sent == [b"abc"]
    await _turn()
    assert real.sent == [b"abc"]
    transport.write(b"")  # nothing to send: no send
    await _turn()
    assert real.sent == [b"abc"]


async def test_close_and_eof_send_what_is_pending_first_and_abort_drops_it():
    real, transport = _gathering()
    transport.write(b"last words")
    transport.close()
    assert real.sent == [b"last words"] and real.closed
    await _turn()  # the scheduled flush finds nothing, and writes nothing to the closed transport
    assert real.sent == [b"last words"]

    real, transport = _gathering()
    transport.write(b"end")
    transport.write_eof()
    assert real.sent == [b"end"] and real.eof

    real, transport = _gathering()
    transport.write(b"never")
    transport.abort()
    await _turn()
    assert real.sent == [] and real.aborted


async def test_nothing_is_sent_on_a_transport_that_is_closing():
    real, transport = _gathering()
    transport.write(b"late")
    real.closed = True  # the peer went away before the turn ended
    await _turn()
    assert real.sent == []


async def test_the_rest_is_the_real_transports():
    real, transport = _gathering()
    assert transport.get_extra_info("peername") == ("127.0.0.1", 5000)
    assert transport.is_closing() is False
