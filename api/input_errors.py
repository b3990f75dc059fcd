"""msgspec's validation errors in Mesh's words: which field, what was wrong, and what is allowed.

A body is decoded by msgspec (api/strict_input.py) and a query or path value converted by Litestar through msgspec;
both say what failed in msgspec's terms ("Expected `str` matching regex '^...$' - at `$.label`"). One function,
`explain`, turns such a message and the type the value was read as into a sentence a client can act on: the field
(as `param`), the problem, and the allowed values or bounds, read from the type itself. A regex is never shown:
every pattern the API uses has its rule in words in PATTERN_RULES (tests/unit/test_input_errors.py checks that
every pattern in the OpenAPI document has one)."""

from __future__ import annotations

import enum
import re
from typing import Any

import msgspec
from msgspec import inspect as mi

from domain import bounds
from domain.template_content import LABEL_DOCUMENT_PATTERN, LABEL_RULE, NAME_PATTERN, NAME_RULE
from projections.spend_history import GROUP_BY_PATTERN, GROUP_BY_RULE
from api.services.operators import AUDIT_CURSOR, AUDIT_CURSOR_RULE

PATTERN_RULES = {
    **bounds.PATTERN_RULES,
    NAME_PATTERN: NAME_RULE,
    LABEL_DOCUMENT_PATTERN: LABEL_RULE,
    GROUP_BY_PATTERN: GROUP_BY_RULE,
    AUDIT_CURSOR: AUDIT_CURSOR_RULE,
}
PATTERN_RULES[bounds.TIME_PATTERN] = (
    f"a time is ISO 8601 with a time zone in the years {bounds.EARLIEST_YEAR} to {bounds.LATEST_YEAR}"
)
MAX_SHOWN = 60  # characters of a refused query value quoted back

_JSON_NAMES = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "null": "null",
    "array": "an array",
    "object": "an object",
}
# msgspec's words for a value of the wrong JSON type or an unreadable time or id (rather than one out of bounds)
_WRONG_KIND = re.compile(r"Expected `[^`]*`, got `|Invalid RFC3339|Invalid UUID|Expected `datetime`")
_AT = re.compile(r" - at `\$(.*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


class InvalidInput(Exception):
    """A value that does not have the type the API reads it as; `where` is "request body" or "query parameter"."""

    def __init__(self, where: str, param: str, message: str, code: str = "invalid_request"):
        super().__init__(f"invalid {where}: {param}: {message}")
        self.param, self.code = param, code


INVALID_AMOUNT = "invalid_amount"  # the code of a refused amount, wherever it is (as domain.money's InvalidAmount)
# A body Struct's ClassVar naming the code its refusals get: one code for every field (then a value of the wrong
# kind, a number for a string or an unreadable time, stays invalid_request), or a dict of field name to code.
# Without one, invalid_request. An amount's refusal is invalid_amount in every body.
CODE_ATTRIBUTE = "invalid_code"


def body_error(error: msgspec.ValidationError, body_type: Any) -> InvalidInput:
    """A body that msgspec refused: the field it names, and what that field takes."""
    text = str(error)
    at = _AT.search(text)
    path = at.group(1) if at else ""
    message = text[: at.start()] if at else text
    fields = [m.group(1) or m.group(2) for m in _PATH_PART.finditer(path)]
    missing_name = re.fullmatch(r"Object missing required field `(.*)`", message)
    top = fields[0] if fields else (missing_name.group(1) if missing_name else "")
    code = "invalid_request"
    for struct in _structs_in(body_type):
        declared = getattr(struct, CODE_ATTRIBUTE, None)
        if declared is not None:
            code = declared if isinstance(declared, str) else declared.get(top, code)
            break
    node = _walk(mi.type_info(body_type), fields)
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", message)
    missing = re.fullmatch(r"Object missing required field `(.*)`", message)
    if unknown or missing:
        name = (unknown or missing).group(1)  # type: ignore[union-attr]
        param = ".".join([*_param(fields), name]) if fields else name
        struct = _unwrap(node)
        names = [f.encode_name for f in struct.fields] if isinstance(struct, mi.StructType) else []
        if unknown:
            fields_are = f"is not a field here; the fields are {', '.join(names)}"
            return InvalidInput("request body", param, fields_are)  # a misspelt field: invalid_request
        return InvalidInput("request body", param, "is required", code)
    param = ".".join(_param(fields)) or "data"
    amount = any(isinstance(t, mi.StrType) and t.pattern == bounds.AMOUNT_PATTERN for t in _members(node))
    if amount:  # one code for a refused amount, in every body (as domain.money's InvalidAmount)
        code = INVALID_AMOUNT
    elif _WRONG_KIND.match(message):  # not even the kind of value the field takes
        code = "invalid_request"
    return InvalidInput("request body", param, explain(message, node), code)


def _structs_in(annotation: Any) -> list[type]:
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    return [t for arg in getattr(annotation, "__args__", ()) for t in _structs_in(arg)]


def query_error(
    param: str, message: str, annotation: Any, value: str | None, where: str = "query parameter"
) -> InvalidInput:
    """A query or path value that could not be read as `annotation` (a type, or its msgspec.inspect node)."""
    node = annotation if isinstance(annotation, mi.Type) else mi.type_info(annotation)
    shown = f" (got {value[:MAX_SHOWN]!r})" if value is not None else ""
    return InvalidInput(where, param, explain(_AT.sub("", message), node, shown))


def explain(message: str, node: mi.Type, shown: str = "") -> str:
    """msgspec's `message` about a value read as `node`: what was wrong, then what is allowed."""
    return f"{_problem(message, node)}{shown}; {allowed(node)}"


def _problem(message: str, node: mi.Type) -> str:
    if m := re.fullmatch(r"Expected `(.*)`, got `(.*)`", message):
        return f"got {_JSON_NAMES.get(m.group(2), m.group(2))}"
    if re.match(r"Expected `str` matching regex", message):
        texts = [t for t in _members(node) if isinstance(t, mi.StrType)]
        if texts and texts[0].pattern in (bounds.SINGLE_LINE, bounds.MULTI_LINE):
            return "contains a character that is not allowed"
        return "is not in the allowed form"
    if m := re.fullmatch(r"Expected `(str|array|object)` of length ([<>]=) (\d+)", message):
        unit = "characters" if m.group(1) == "str" else "entries"
        return f"has too {'many' if m.group(2) == '<=' else 'few'} {unit}"
    if m := re.fullmatch(r"Expected `(int|float)` ([<>]=?) (\S+)", message):
        return f"is too {'large' if m.group(2).startswith('<') else 'small'}"
    if "multiple of" in message:
        return "is a fractional number"
    if m := re.fullmatch(r"Invalid enum value (.*)", message):
        return f"{m.group(1)} is not one of the allowed values"
    if "timezone" in message or "RFC3339" in message:
        return "is not an ISO 8601 time with a time zone"
    if message.startswith("Invalid UUID"):
        return "is not a UUID"
    return message.replace("`", "")


def allowed(node: mi.Type) -> str:
    """What a value of `node` may be, in words."""
    node = _unwrap(node)
    if isinstance(node, mi.UnionType):
        members = [t for t in node.types if not isinstance(_unwrap(t), mi.NoneType)]
        amount = [t for t in members if isinstance(t, mi.StrType) and t.pattern == bounds.AMOUNT_PATTERN]
        nullable = " (or null)" if len(members) < len(node.types) else ""
        if amount:
            return bounds.AMOUNT_RULE + nullable
        return "takes " + " or ".join(dict.fromkeys(_what(t) for t in members)) + nullable
    if isinstance(node, mi.StrType) and node.pattern in PATTERN_RULES:
        rule = PATTERN_RULES[node.pattern]
        return f"takes {_what(node)}; {rule}" if _length(node) else rule
    return "takes " + _what(node)


def _what(node: mi.Type) -> str:
    node = _unwrap(node)
    if isinstance(node, mi.StrType):
        return "a string" + _length(node)
    if isinstance(node, (mi.IntType, mi.FloatType)):
        kind = "an integer" if isinstance(node, mi.IntType) else "a number"
        low = node.ge if node.ge is not None else node.gt
        high = node.le if node.le is not None else node.lt
        if node.multiple_of == 1:
            kind = "a whole number"
        if low is not None and high is not None:
            return f"{kind} from {low:g} to {high:g}"
        if low is not None:
            return f"{kind} {'>=' if node.ge is not None else '>'} {low:g}"
        if high is not None:
            return f"{kind} {'<=' if node.le is not None else '<'} {high:g}"
        return kind
    if isinstance(node, mi.BoolType):
        return "true or false"
    if isinstance(node, mi.EnumType):
        return "one of " + ", ".join(str(m.value) for m in node.cls)
    if isinstance(node, mi.LiteralType):
        return "one of " + ", ".join(str(v.value if isinstance(v, enum.Enum) else v) for v in node.values)
    if isinstance(node, mi.DateTimeType):
        return "an ISO 8601 time with a time zone, e.g. 2027-01-01T00:00:00Z"
    if isinstance(node, mi.UUIDType):
        return "a UUID"
    if isinstance(node, (mi.ListType, mi.SetType, mi.VarTupleType)):
        count = _count(node.min_length, node.max_length, "entries")
        return f"an array{count} of {_what(node.item_type)}"
    if isinstance(node, mi.StructType):
        return "an object with the fields " + ", ".join(f.encode_name for f in node.fields)
    if isinstance(node, mi.DictType):
        return "an object" + _count(node.min_length, node.max_length, "entries")
    if isinstance(node, mi.UnionType):
        return " or ".join(dict.fromkeys(_what(t) for t in node.types))
    if isinstance(node, mi.NoneType):
        return "null"
    return "a value of the documented type"


def _length(node: mi.StrType) -> str:
    return _count(node.min_length, node.max_length, "characters")


def _count(low: int | None, high: int | None, unit: str) -> str:
    if low and high is not None:
        return f" of {low} to {high} {unit}"
    if high is not None:
        return f" of at most {high} {unit}"
    if low:
        return f" of at least {low} {unit}"
    return ""


def _members(node: mi.Type) -> list[mi.Type]:
    node = _unwrap(node)
    return [_unwrap(t) for t in node.types] if isinstance(node, mi.UnionType) else [node]


def _unwrap(node: mi.Type) -> mi.Type:
    while isinstance(node, mi.Metadata):
        node = node.type
    return node


def _walk(node: mi.Type, fields: list[str]) -> mi.Type:
    """The type of the value at `fields` (names and list indexes) inside `node`."""
    for name in fields:
        node = _unwrap(node)
        options = node.types if isinstance(node, mi.UnionType) else (node,)
        for option in map(_unwrap, options):
            if isinstance(option, mi.StructType):
                field = next((f for f in option.fields if f.encode_name == name), None)
                if field is not None:
                    node = field.type
                    break
            elif isinstance(option, (mi.ListType, mi.SetType, mi.VarTupleType)) and name.isdigit():
                node = option.item_type
                break
            elif isinstance(option, mi.DictType):
                node = option.value_type
                break
    return node


def _param(fields: list[str]) -> list[str]:
    """The path as a `param`: `messages.0.content` is messages[0].content."""
    out: list[str] = []
    for name in fields:
        if name.isdigit() and out:
            out[-1] += f"[{name}]"
        else:
            out.append(name)
    return out
