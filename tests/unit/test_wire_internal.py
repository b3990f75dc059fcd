"""What the front-door codecs share (gateway/wire/internal.py): a batch of internal SSE frames read as chunks."""

from __future__ import annotations

import msgspec

from gateway.providers.base import SSE_DONE, sse
from gateway.wire.internal import chunks


def frame(content: str) -> bytes:
    return sse(msgspec.json.encode({"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]}))


def test_a_batch_reads_as_the_chunks_of_its_frames_one_by_one():
    frames = [frame("a"), b": keep-alive\n\n", b"data: {not json\n\n", frame("b\nc"), SSE_DONE, frame("after")]
    one_by_one = [found for f in frames[:-1] for found in chunks(f)]
    assert [c.choices[0].delta.content if c else None for c in one_by_one] == ["a", "b\nc", None]
    assert chunks(b"".join(frames)) == one_by_one  # read up to [DONE]
    assert chunks(b"data: {not json\n\n") == [] and chunks(SSE_DONE) == [None]
