"""What the front-door codecs share (gateway/wire/internal.py): an object encoded once but for its varying members,
and a batch of internal SSE frames read as chunks."""

from __future__ import annotations

import msgspec
import pytest

from gateway.providers.base import SSE_DONE, sse
from gateway.wire.internal import PartlyEncoded, chunks

DOCUMENTS = [
    {},
    {"status": "in_progress"},
    {"id": "r", "status": "in_progress", "output": [], "metadata": {"k": "100%s"}},
    {"status": "in_progress", "output": [], "usage": None},
    {"id": "r", "tools": [{"name": "f", "parameters": {"output": []}}], "status": "x", "text": 'é\n"', "usage": None},
]
NEW = {"status": "completed", "output": [{"type": "message", "text": "a%d"}], "usage": {"input_tokens": 3}}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_a_partly_encoded_object_filled_is_the_object_encoded_whole(document):
    varying = tuple(name for name in document if name in NEW)
    filled = PartlyEncoded(document, varying).fill(*(msgspec.json.encode(NEW[name]) for name in varying))
    assert filled == msgspec.json.encode({name: NEW.get(name, value) for name, value in document.items()})


def frame(content: str) -> bytes:
    return sse(msgspec.json.encode({"id": "c", "choices": [{"index": 0, "delta": {"content": content}}]}))


def test_a_batch_reads_as_the_chunks_of_its_frames_one_by_one():
    frames = [frame("a"), b": keep-alive\n\n", b"data: {not json\n\n", frame("b\nc"), SSE_DONE, frame("after")]
    one_by_one = [found for f in frames[:-1] for found in chunks(f)]
    assert [c.choices[0].delta.content if c else None for c in one_by_one] == ["a", "b\nc", None]
    assert chunks(b"".join(frames)) == one_by_one  # read up to [DONE]
    assert chunks(b"data: {not json\n\n") == [] and chunks(SSE_DONE) == [None]
