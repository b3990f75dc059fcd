"""The event log parses message headers as nats-py does, faster (commands/event_log.py)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from nats.aio.client import Client

from commands.event_log import _acked, _from_nanoseconds, _header_fields, _parse_time, parse_header_lines

BLOCKS = [
    b"Nats-Stream: MESH\r\nNats-Subject: mesh.usage.6b1c7d0e-3a43-4d5e-9b8e-2f6e3c9f0a11\r\nNats-Sequence: 12345\r\n"
    b"Nats-Time-Stamp: 2026-12-04T16:51:45.502065001Z\r\nNats-Num-Pending: 3\r\nNats-Last-Sequence: 0\r\n"
    b"Mesh-Topic: usage.recorded\r\nMesh-Originator-Version: 1\r\nMesh-Originator-Id: 6b1c7d0e\r\n\r\n",
    b"A:b\r\n",
    b"A :  b  \r\nB\r\nx y: z\r\n:empty\r\nC:\r\n",  # no colon, a space in a name, no name: left out
    b"K: v\xff\r\n",  # bad UTF-8 in a value: replaced
    b"N\xc3\xa9: x\r\nOk: 1\r\n",  # a name that is not ASCII: left out
    b" Lead: x\r\nDup: 1\r\nDup: 2\r\n",  # the last of a name wins
    b"Status: 204\r\nDescription: EOB\r\nNats-Num-Pending: 0\r\n\r\n",
]


@pytest.mark.parametrize("raw", BLOCKS)
def test_headers_parse_as_nats_py_parses_them(raw):
    assert parse_header_lines(raw) == Client._parse_header_lines(raw)


@pytest.mark.parametrize("raw", BLOCKS)
def test_a_batchs_header_fields_are_nats_pys_for_every_name_it_parses(raw):
    """The direct-get batch reader's own parse (bytes, every line with a colon) gives each name nats-py gives,
    with its value."""
    fields = _header_fields(raw)
    parsed = Client._parse_header_lines(raw)
    assert parsed  # each block names something
    for name, value in parsed.items():
        assert fields[name.encode()].decode("utf-8", "replace") == value


@pytest.mark.parametrize("nanoseconds", [1796479437655845949, 1796479437655845500, 1796479437000000999, 10**18])
def test_a_consumers_reply_subject_tells_the_time_a_direct_get_tells(nanoseconds):
    """A consumer's message gives its time in nanoseconds in the reply subject, a direct get's as text: the same
    microsecond either way (cut, not rounded)."""
    seconds, fraction = divmod(nanoseconds, 10**9)
    stamp = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"
    for reply in (f"$JS.ACK.S.c.1.7.3.{nanoseconds}.2", f"$JS.ACK.dom.hash.S.c.1.7.3.{nanoseconds}.2.tok"):
        position, at, pending = _acked(reply.encode())
        assert (position, pending) == (7, 2)
        assert _from_nanoseconds(at) == _parse_time(stamp)
