"""A batch of events written as table rows, a chunk of it per statement: one array per column.

`insert ... select * from unnest(%s::uuid[], %s::timestamptz[], ...)`: one statement carries a chunk of the batch
(`chunks`) instead of one per row (executemany), and PostgreSQL reads each value in its binary form instead of parsing
text (one JSON array read by json_to_recordset), which costs the projection worker and its PostgreSQL backend
the least per event (bench/logs.py measures the apply rate).

The arrays are encoded here, not by psycopg, whose array dumper visits every element in Python. Each encoder
below writes PostgreSQL's binary array format (array_recv) for one element type, with whole-column fast paths
where a column holds no missing value. `numeric` goes as text (`{1,2,3}`): its values may pass 64 bits, and
joining decimal strings is cheaper here than base-10000 digits.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from itertools import chain, repeat
from operator import attrgetter, is_
from typing import Any, Callable, Iterator, Sequence, TypeVar

import msgspec
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

_HEADER = struct.Struct(">iiIii")  # dimensions (1), has nulls, element type, length, lower bound (1)
_EMPTY = struct.Struct(">iiI")  # no dimension: the empty array
_LENGTH = struct.Struct(">i")
_NULL = _LENGTH.pack(-1)
_INT4 = struct.Struct(">i")
_INT8 = struct.Struct(">q")
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
# Rows per statement where a batch is written in a pipeline (psycopg's pipeline mode): PostgreSQL writes one chunk
# while the next is encoded, instead of waiting idle for the whole batch's encoding and then keeping it waiting.
CHUNK_ROWS = 1000
REPEATED = 2  # a `repeats` column with at most one distinct value per this many values encodes each once
_MICROSECOND = timedelta(microseconds=1)


class _Array(bytes):
    """An encoded array parameter; subclasses name PostgreSQL's array type (the `oid` their dumper sends)."""

    oid = 0


def _array_type(name: str, oid: int, format: Format = Format.BINARY) -> type[_Array]:
    kind = type(name, (_Array,), {"oid": oid})
    dumper = type(f"{name}Dumper", (Dumper,), {"oid": oid, "format": format, "dump": lambda self, obj: obj})
    psycopg.adapters.register_dumper(kind, dumper)
    return kind


def _binary(
    name: str,
    element_oid: int,
    array_oid: int,
    size: int | None,
    to_bytes: Callable[[Any], bytes],
    ints: str = "",
    to_int: Callable[[Any], int] | None = None,
    repeats: bool = False,
):
    """The encoder of a binary element type: `size` bytes each (None: variable); `ints`, the struct code of
    an element when values are Python ints, or become ints by `to_int` (a column with no missing value is then
    one struct.pack); `repeats`, values are hashable and a column may repeat a few of them (names of models,
    providers, statuses), each then encoded once. Whole columns go through C-level maps and joins; a column with
    some values missing and some not takes a Python step per value, and a `repeats` column of few distinct values
    one per distinct value."""
    array = _array_type(name, array_oid)
    fixed = _LENGTH.pack(size) if size is not None else b""

    def element(value: Any) -> bytes:
        if value is None:
            return _NULL
        data = to_bytes(value)
        return fixed + data if size is not None else _LENGTH.pack(len(data)) + data

    def encode(values: Sequence[Any]) -> _Array:
        count = len(values)
        if not count:
            return array(_EMPTY.pack(0, 0, element_oid))
        missing = sum(map(is_, values, repeat(None)))
        distinct = set(values) if repeats else None
        if missing == count:
            body = _NULL * count
        elif distinct is not None and len(distinct) * REPEATED <= count:
            elements = {value: element(value) for value in distinct}
            body = b"".join(map(elements.__getitem__, values))
        elif missing:
            body = b"".join([element(value) for value in values])
        elif ints:
            numbers = values if to_int is None else list(map(to_int, values))
            body = struct.pack(">" + ("i" + ints) * count, *chain.from_iterable(zip(repeat(size), numbers)))
        elif size is not None:
            body = fixed + fixed.join(map(to_bytes, values))
        else:
            data = list(map(to_bytes, values))
            body = b"".join(chain.from_iterable(zip(map(_LENGTH.pack, map(len, data)), data)))
        return array(_HEADER.pack(1, int(bool(missing)), element_oid, count, 1) + body)

    return encode


def _microseconds(value: datetime) -> int:
    """A time as PostgreSQL stores a timestamptz: microseconds since 2000-01-01 UTC."""
    return (value - _PG_EPOCH) // _MICROSECOND


def _numeric(values: Sequence[Any]) -> _Array:
    """Integers (pico-USD) as PostgreSQL's text array form, `{1,NULL,3}`."""
    return _NUMERIC_ARRAY(("{" + ",".join(["NULL" if v is None else str(v) for v in values]) + "}").encode())


_NUMERIC_ARRAY = _array_type("NumericArray", 1231, Format.TEXT)
# jsonb's binary form: a version byte, then the JSON text
_JSONB = _binary("JsonbArray", 3802, 3807, None, lambda value: b"\x01" + msgspec.json.encode(value))


def _jsonb(values: Sequence[Any]) -> _Array:
    """Lists of msgspec Structs as jsonb (an empty list: NULL)."""
    return _JSONB([value or None for value in values])


_ENCODERS: dict[str, Callable[[Sequence[Any]], _Array]] = {
    "uuid": _binary("UuidArray", 2950, 2951, 16, attrgetter("bytes")),
    "timestamptz": _binary(
        "TimestamptzArray", 1184, 1185, 8, lambda value: _INT8.pack(_microseconds(value)), "q", _microseconds
    ),
    "text": _binary("TextArray", 25, 1009, None, str.encode, repeats=True),
    "int": _binary("Int4Array", 23, 1007, 4, _INT4.pack, "i"),
    "bigint": _binary("Int8Array", 20, 1016, 8, _INT8.pack, "q"),
    "boolean": _binary("BoolArray", 16, 1000, 1, lambda value: b"\x01" if value else b"\x00"),
    "numeric": _numeric,
    "jsonb": _jsonb,
}


_Row = TypeVar("_Row")


def chunks(rows: Sequence[_Row]) -> Iterator[Sequence[_Row]]:
    """`rows` in chunks of CHUNK_ROWS, in order."""
    for start in range(0, len(rows), CHUNK_ROWS):
        yield rows[start : start + CHUNK_ROWS]


class EventColumns:
    """The event fields a table keeps, each with its column type (an event's `timestamp` goes to `time`)."""

    def __init__(self, types: dict[str, str]):
        self.fields = tuple(types)
        self.columns = ", ".join("time" if name == "timestamp" else name for name in types)
        self.rows = "unnest(" + ", ".join(f"%s::{kind}[]" for kind in types.values()) + ")"
        self._encoders = [_ENCODERS[kind] for kind in types.values()]
        self._row = attrgetter(*self.fields)  # an event's values, in the columns' order

    def params(self, events: Sequence[Any]) -> list[_Array]:
        """The query parameters of `rows` for these events: one encoded array per column."""
        if len(self.fields) == 1:
            columns: Sequence[Sequence[Any]] = [[self._row(event) for event in events]]
        else:
            columns = list(zip(*map(self._row, events))) or [() for _ in self.fields]
        return [encode(column) for column, encode in zip(columns, self._encoders)]
