"""Request bodies and times in the query are read as strictly as the OpenAPI document states them.

Litestar converts a handler's arguments leniently (`msgspec.convert(..., strict=False)`): a JSON body's `"false"`
or `0` would become a bool, `"12"` an int, and a query's `?at=0.5` a time (seconds since 1970). The document says
a bool, an int, an ISO 8601 time; so before the handler runs, a JSON body is decoded strictly into the handler's
`data` type, and a time in the query must be ISO 8601 text. A mismatch is a 400 naming the field."""

from __future__ import annotations

import types
from datetime import datetime
from typing import Any, Union, get_args, get_origin

import msgspec
from litestar import Request
from litestar.exceptions import ClientException

from api.errors import NESTED_TOO_DEEPLY
from api.input_errors import body_error, query_error


def _has(annotation: Any, kind: type) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return any(_has(a, kind) for a in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, kind)


def _whole_numbers(value: Any) -> Any:
    """JSON has one kind of number: 5.0 is the integer 5 to JSON Schema, as Litestar's decoding (and the handler)
    reads it; only a fraction is refused where an integer goes."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


async def check_strict_input(request: Request) -> None:
    """A `before_request` hook: refuse what Litestar's lenient conversion would otherwise accept."""
    handler = request.route_handler
    signature = getattr(handler, "parsed_fn_signature", None)
    if signature is None:
        return
    parameters = dict(signature.parameters)
    for provider in handler.resolve_dependencies().values():  # e.g. the log filters' query parameters
        parameters.update(getattr(getattr(provider, "parsed_fn_signature", None), "parameters", {}))
    for name, field in parameters.items():
        annotation = field.annotation
        if name == "data" and _has(annotation, msgspec.Struct):
            body = await request.body()
            if not body.strip():
                continue  # Litestar answers a missing body itself (a 400, or None when the body is optional)
            try:
                msgspec.convert(_whole_numbers(msgspec.json.decode(body)), type=annotation, strict=True)
            except RecursionError:
                raise ClientException(NESTED_TOO_DEEPLY) from None
            except msgspec.ValidationError as exc:
                raise body_error(exc, annotation) from None
            except msgspec.DecodeError:
                continue  # not JSON: Litestar's own decoding says so
        elif _has(annotation, datetime):
            query = getattr(field.kwarg_definition, "name", None) or name
            for value in request.query_params.getall(query, []):
                try:
                    msgspec.convert(value, datetime, strict=True)
                except msgspec.ValidationError as exc:
                    raise query_error(query, str(exc), annotation, value) from None
