"""Trace ids: one per request, in every header, event and log row keyed by it."""

from __future__ import annotations

import os
import time
import uuid
from contextvars import ContextVar

TRACE_RANDOM_BYTES = 10  # of a trace id; 74 of their 80 bits are used
MS_MASK = (1 << 48) - 1
RAND_B_MASK = (1 << 62) - 1


class _TraceIds:
    """Time-ordered UUIDs (version 7, RFC 9562): the Unix time in milliseconds, then 74 random bits.

    Every table keyed by trace id (the request logs, their bodies) then inserts each new request at the right
    edge of its index, a page in memory, instead of at a random page of an index of millions of entries (see
    bench/README.md). The random bits come from one os.urandom read per 256 ids (uuid4() makes a syscall each)."""

    def __init__(self) -> None:
        self._pool, self._at = b"", 0

    def __call__(self) -> uuid.UUID:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(TRACE_RANDOM_BYTES * 256), 0
        rand = int.from_bytes(self._pool[self._at : self._at + TRACE_RANDOM_BYTES])
        self._at += TRACE_RANDOM_BYTES
        return uuid7(time.time_ns() // 1_000_000, rand)


def uuid7(ms: int, rand: int) -> uuid.UUID:
    """The version 7 UUID of Unix time `ms` (milliseconds) and the low 74 bits of `rand`."""
    # unix_ts_ms (48 bits) | version 7 (4) | rand_a (12) | variant 0b10 (2) | rand_b (62)
    return _uuid_of((ms & MS_MASK) << 80 | 7 << 76 | (rand >> 62 & 0xFFF) << 64 | 2 << 62 | rand & RAND_B_MASK)


def _uuid_of(value: int) -> uuid.UUID:
    """uuid.UUID(int=value) without its range check (`value` is 128 bits by construction): as uuid.UUID itself
    sets its slots, at a third of the cost, once per request."""
    made = _new_uuid(uuid.UUID)
    _set(made, "int", value)
    _set(made, "is_safe", _SAFETY_UNKNOWN)
    return made


_new_uuid, _set, _SAFETY_UNKNOWN = uuid.UUID.__new__, object.__setattr__, uuid.SafeUUID.unknown


new_trace_id = _TraceIds()
# The trace id of the request the running task serves (each request has its own task): log lines carry it.
current_trace: ContextVar[uuid.UUID | None] = ContextVar("mesh_trace_id", default=None)
