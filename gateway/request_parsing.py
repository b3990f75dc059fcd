"""The request bodies the gateway reads: decoded, then checked against what each endpoint accepts."""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.errors import invalid


class ChatRequest(msgspec.Struct):
    """The fields the gateway itself checks; the others go to the provider through its allow-list
    (gateway/fields.py)."""

    messages: list[dict[str, Any]]
    model: str | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None


class EmbeddingsRequest(msgspec.Struct):
    input: str | list[Any]  # a string, strings, token ids, or lists of token ids
    model: str | None = None


def decode_object(raw: bytes) -> dict:
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise invalid(f"request body is not valid JSON: {exc}", "invalid_json") from None
    except RecursionError:  # msgspec's answer to a body nested deeper than the interpreter's recursion limit
        raise invalid("request body is not valid JSON: it nests too deeply", "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object", "invalid_json")
    return body


def parse_chat(body: dict) -> ChatRequest:
    try:
        request = msgspec.convert(body, ChatRequest)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request: {exc}", "invalid_request") from None
    if not request.messages:
        raise invalid("'messages' must contain at least one message", "invalid_request", "messages")
    for limit in ("max_tokens", "max_completion_tokens", "n"):
        value = getattr(request, limit)
        if value is not None and value < 1:
            raise invalid(f"'{limit}' must be at least 1, got {value}", "invalid_request", limit)
    if (
        None not in (request.max_tokens, request.max_completion_tokens)
        and request.max_tokens != request.max_completion_tokens
    ):
        raise invalid(
            f"'max_tokens' ({request.max_tokens}) and 'max_completion_tokens' "
            f"({request.max_completion_tokens}) disagree; send one of them (or both equal)",
            "invalid_request",
            "max_completion_tokens",
        )
    return request
