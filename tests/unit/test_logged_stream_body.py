"""A streamed answer's logged body (MESH_LOG_BODIES=on) is kept only as far as the log keeps it."""

from __future__ import annotations

from gateway.stream_relay import recording as _recording
from gateway.bodies import _cut
from domain.usage import MAX_LOGGED_BODY


async def frames(n: int, size: int):
    for i in range(n):
        yield bytes([65 + i % 26]) * size


async def test_a_long_stream_is_relayed_whole_and_kept_only_to_the_cut():
    kept: list[bytes] = []
    relayed = [frame async for frame in _recording(frames(1000, 1000), kept)]  # 1 MB, 4 x the log's limit
    assert sum(map(len, relayed)) == 1_000_000  # the client gets every byte
    assert sum(map(len, kept)) == MAX_LOGGED_BODY + 1  # one byte past the limit: enough to know it was cut
    text, truncated = _cut(b"".join(kept))
    assert truncated and text.encode() == b"".join(relayed)[:MAX_LOGGED_BODY]


async def test_a_short_stream_is_kept_whole():
    kept: list[bytes] = []
    relayed = [frame async for frame in _recording(frames(3, 10), kept)]
    assert kept == relayed and _cut(b"".join(kept)) == (b"".join(relayed).decode(), False)
