"""The public shape of every registered event, from its type (domain/events.py `EVENT_TYPES`): a JSON Schema
(`mesh events schema`) and the field tables of docs/events.md (`mesh events docs`).

The shape is the message body as stored on the stream: an aggregate event's envelope (`originator_id`,
`originator_version`) travels in the headers, not in the body, so it is left out; a stand-alone event (a
msgspec Struct) is its body.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import msgspec

from domain.events import EVENT_TYPES

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
HEADER_FIELDS = ("originator_id", "originator_version")  # in the message headers, not the body
DOC_FIELDS_LEFT_OUT = {"timestamp", "originator_topic"}  # on every aggregate event: described once in the docs
GENERATED = re.compile(
    r"(<!-- generated: (?P<kind>events|fields) (?P<what>[^>]*?) -->\n)(?P<body>.*?)(<!-- end generated -->)",
    re.S,
)
ANY_OWNER = "*"  # a block of events whose owner no other block lists (new aggregates land there)
EVENTS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "events.md"


class DocsError(ValueError):
    """docs/events.md cannot be generated as it stands (a block names an unknown event)."""


def body_fields(cls: type) -> list[tuple[str, str, Any]]:
    """(name, annotation as written, default or MISSING) of each body field, in stored order."""
    if issubclass(cls, msgspec.Struct):
        annotations: dict[str, Any] = {}
        for base in reversed(cls.__mro__):
            annotations.update(getattr(base, "__annotations__", {}))
        defaults = dict(zip(reversed(cls.__struct_fields__), reversed(cls.__struct_defaults__)))
        return [
            (name, _written(annotations[name]), _default(defaults.get(name, dataclasses.MISSING)))
            for name in cls.__struct_fields__
        ]
    return [
        (f.name, _written(f.type), _dataclass_default(f))
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name not in HEADER_FIELDS
    ]


def _written(annotation: Any) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))


def _default(value: Any) -> Any:
    if value is msgspec.NODEFAULT:
        return dataclasses.MISSING
    if isinstance(value, msgspec._core.Factory):  # type: ignore[attr-defined]
        return value.factory()
    return value


def _dataclass_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def body_type(name: str, cls: type) -> type:
    """A Struct named after the event with exactly its body's fields and types (what a subscriber decodes)."""
    hints = typing.get_type_hints(cls)
    fields: list[Any] = []
    for field, _, default in body_fields(cls):
        fields.append((field, hints[field]) if default is dataclasses.MISSING else (field, hints[field], default))
    return msgspec.defstruct(name, fields, kw_only=True)


def json_schema() -> dict[str, Any]:
    """One JSON Schema document: `$defs` holds each event's body under its registered name; the document
    validates any one of them (`oneOf`), and `x-mesh-events` maps each name to its definition."""
    names = sorted(EVENT_TYPES)
    refs, components = msgspec.json.schema_components(
        [body_type(name, EVENT_TYPES[name]) for name in names], ref_template="#/$defs/{name}"
    )
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "Mesh events",
        "description": "The body of every event on the Mesh stream, by its name (header Mesh-Topic); "
        "docs/events.md says what each means.",
        "oneOf": list(refs),
        "x-mesh-events": dict(zip(names, refs)),
        "$defs": components,
    }


def owner_of(cls: type) -> str:
    """The aggregate an event belongs to (`Account` for `Account.Registered`), or the stand-alone event's class."""
    return cls.__qualname__.split(".")[0]


def _field_text(name: str, written: str, default: Any) -> str:
    text = f"{name}: {written}"
    if default is not dataclasses.MISSING:
        text += f" = {msgspec.json.encode(default).decode() if isinstance(default, str) else default!r}"
    return "`" + text.replace("|", "\\|") + "`"


def _events_table(names: list[str], meanings: dict[str, str]) -> str:
    if not names:
        return ""
    lines = ["| name | fields | meaning |", "|---|---|---|"]
    for name in names:
        cls = EVENT_TYPES[name]
        left_out = set() if issubclass(cls, msgspec.Struct) else DOC_FIELDS_LEFT_OUT
        shown = [_field_text(*field) for field in body_fields(cls) if field[0] not in left_out]
        lines.append(f"| `{name}` | {', '.join(shown) or '—'} |{_cell(meanings.get(name, ''))}|")
    return "\n".join(lines) + "\n"


def _fields_table(name: str, meanings: dict[str, str]) -> str:
    lines = ["| field | type | meaning |", "|---|---|---|"]
    for field, written, default in body_fields(EVENT_TYPES[name]):
        shown = written.replace("|", "\\|") + ("" if default is dataclasses.MISSING else f" (default {default!r})")
        lines.append(f"| `{field}` | {shown} |{_cell(meanings.get(field, ''))}|")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return f" {text} " if text else " "


def _meanings(body: str) -> dict[str, str]:
    """The hand-written last cell of each row of a generated block, by the names in its first cell."""
    found = {}
    for line in body.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for named in re.findall(r"`([^`]+)`", cells[0]):
            found[named] = cells[-1]
    return found


def render_docs(text: str) -> str:
    """docs/events.md with every generated block made again from the registry, its meanings kept.

    `<!-- generated: events Owner Owner... -->` holds a row per event of those aggregates (`*`: of every owner
    no block lists); `<!-- generated: fields <event name> -->` a row per field of one event."""
    blocks = list(GENERATED.finditer(text))
    listed = {owner for b in blocks if b["kind"] == "events" for owner in b["what"].split()}
    fields_blocks = {b["what"].strip() for b in blocks if b["kind"] == "fields"}
    for name in fields_blocks:
        if name not in EVENT_TYPES:
            raise DocsError(f"docs/events.md has a fields block for {name!r}, which is not a registered event")

    def rows(owners: list[str]) -> list[str]:
        return [
            name
            for name, cls in EVENT_TYPES.items()
            if name not in fields_blocks
            and (owner_of(cls) in owners or (ANY_OWNER in owners and owner_of(cls) not in listed))
        ]

    def block(match: re.Match[str]) -> str:
        meanings = _meanings(match["body"])
        what = match["what"].strip()
        if match["kind"] == "fields":
            return f"{match[1]}{_fields_table(what, meanings)}{match[5]}"
        table = _events_table(rows(what.split()), meanings)
        return f"{match[1]}{table}{match[5]}"

    unplaced = [name for name, cls in EVENT_TYPES.items() if name not in fields_blocks and owner_of(cls) not in listed]
    if unplaced and ANY_OWNER not in listed:
        raise DocsError(f"docs/events.md has no block for {unplaced} (add one, or a `{ANY_OWNER}` block)")
    return GENERATED.sub(block, text)


def write_docs(path: Path) -> bool:
    """Regenerate the blocks of `path` in place; whether anything changed."""
    before = path.read_text()
    after = render_docs(before)
    if after != before:
        path.write_text(after)
    return after != before
