"""Anthropic's Messages API (POST /v1/messages) as a front door: its codec to and from the internal shape.

To an Anthropic-kind model the request passes through as sent (gateway/providers/anthropic.py `messages`); this
module then only checks its fields (`PASS_FIELDS`, priced server tools refused), bounds its prompt and picks the
headers that go with it. To any other model it is translated:

- request: translated to the internal shape by gateway/wire/messages_request.py.
- answer: text, tool calls and reasoning (where the provider returns it) → text, tool_use and thinking blocks;
  finish_reason → stop_reason; Mesh's usage → input (cache reads and writes left out, as Anthropic counts it),
  cache_read_input_tokens, cache_creation_input_tokens, output tokens.
- stream: message_start, ping, then per block content_block_start / _delta (text_delta, input_json_delta,
  thinking_delta) / _stop, message_delta (stop_reason and the usage) and message_stop.
- errors: {"type": "error", "error": {"type", "message"}} with Anthropic's error type for the status.
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.asgi import Scope
from gateway.answer_fields import cost_fields
from gateway.catalog import Model
from gateway.errors import GatewayError, invalid
from gateway.providers.base import Usage
from gateway.wire.internal import Function, Turn, decode_completion
from gateway import worst_case

PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
API_VERSION = "2023-06-01"  # what goes upstream when the client sends no anthropic-version
FORWARDED_HEADERS = (b"anthropic-version", b"anthropic-beta")
MAX_FORWARDED_HEADER = 2000  # characters of a forwarded header's value
# What an Anthropic upstream takes as a client sends it (docs.anthropic.com/en/api/messages).
PASS_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_k",
        "top_p",
        "tools",
        "tool_choice",
        "thinking",
        "context_management",
        "output_config",
        "service_tier",
    }
)
FREE_SERVICE_TIERS = frozenset({"auto", "standard_only"})  # priority capacity is priced apart
# Anthropic's server tools that the provider charges per use (searches, fetches, container time): no price for them.
PRICED_TOOL_PREFIXES = ("web_search", "web_fetch", "code_execution")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}
STOP_REASONS["content_filter"] = "refusal"
SIGNATURE = ""  # thinking translated from another provider carries no Anthropic signature


def error_body(exc: GatewayError) -> bytes:
    kind = ERROR_TYPES.get(exc.status, "api_error")
    return msgspec.json.encode({"type": "error", "error": {"type": kind, "message": exc.message}})


def forwarded_headers(scope: Scope) -> dict[str, str]:
    """The client's anthropic-version (else 2023-06-01) and anthropic-beta, for an Anthropic upstream."""
    headers = {"anthropic-version": API_VERSION}
    for name, value in scope["headers"]:
        if name in FORWARDED_HEADERS:
            if len(value) > MAX_FORWARDED_HEADER:
                raise invalid(f"{name.decode()} is longer than {MAX_FORWARDED_HEADER} characters", param=name.decode())
            headers[name.decode()] = value.decode("latin-1")
    return headers


class Request(msgspec.Struct):
    """The fields the gateway itself reads; the rest are checked by `check_pass_through` or `translate`."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None  # required, but not by count_tokens
    stream: bool = False


def parse(body: dict, counting: bool = False) -> Request:
    try:
        request = msgspec.convert(body, Request)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request: {exc}", "invalid_request") from None
    if not request.messages:
        raise invalid("'messages' must contain at least one message", "invalid_request", "messages")
    if counting:
        return request
    if request.max_tokens is None:
        raise invalid("'max_tokens' is required", "invalid_request", "max_tokens")
    if request.max_tokens < 1:
        raise invalid(f"'max_tokens' must be at least 1, got {request.max_tokens}", "invalid_request", "max_tokens")
    return request


def check_pass_through(body: dict, model: Model) -> None:
    """The fields an Anthropic upstream takes, without the ones it would charge for beyond the model's price."""
    unknown = body.keys() - PASS_FIELDS
    if unknown:
        name = min(unknown)
        raise invalid(
            f"unknown or unsupported field {name!r} for model {model.id!r}; allowed fields: "
            f"{', '.join(sorted(PASS_FIELDS))}",
            "unsupported_parameter",
            name,
        )
    tier = body.get("service_tier")
    if tier is not None and tier not in FREE_SERVICE_TIERS:
        raise invalid(
            f"service_tier={str(tier)[:40]!r} is not available through Mesh: priority capacity is priced apart and "
            "this model's price does not cover it",
            "unsupported_parameter",
            "service_tier",
        )
    for tool in body.get("tools") or []:
        kind = str(tool.get("type") or "") if isinstance(tool, dict) else ""
        if kind.startswith(PRICED_TOOL_PREFIXES):
            raise invalid(
                f"the server tool {kind[:60]!r} is not available through Mesh: the provider charges for each use and "
                "this model's price does not cover it",
                "unsupported_parameter",
                "tools",
            )


def prompt_bound(body: dict, model: Model) -> int:
    """An upper bound of the prompt's tokens (the reservation's): a token of text is at least one byte of its JSON;
    an image counts the most one image counts for this model; a document, or a block of a kind not known here,
    counts the whole context."""
    size = worst_case.PROMPT_OVERHEAD + len(msgspec.json.encode({k: v for k, v in body.items() if k != "messages"}))
    if body.get("tools"):
        size += worst_case.TOOLS_OVERHEAD
    for message in body["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        size += worst_case.MESSAGE_OVERHEAD
        if not isinstance(content, list):
            size += len(msgspec.json.encode(content))
            continue
        for block in content:
            size += _block_bound(block, model)
            if size >= model.context_tokens:
                return model.context_tokens
    return min(size, model.context_tokens)


def _block_bound(block: Any, model: Model) -> int:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind == "image":
        return model.image_tokens
    if kind == "tool_result" and isinstance(block.get("content"), list):
        return sum(_block_bound(b, model) for b in block["content"])
    if kind in ("text", "tool_use", "tool_result", "thinking", "redacted_thinking"):
        return len(msgspec.json.encode(block))
    return model.context_tokens


def usage(counted: Usage, cost: int | None = None) -> dict:
    """A message's usage, with the cost charged for it once known (gateway/answer_fields.py)."""
    return ({} if cost is None else cost_fields(cost)) | {
        "input_tokens": counted.prompt_tokens - counted.cached_prompt_tokens - counted.cache_write_tokens,
        "cache_creation_input_tokens": counted.cache_write_tokens,
        "cache_read_input_tokens": counted.cached_prompt_tokens,
        "output_tokens": counted.completion_tokens,
    }


def message_id(chat_id: Any) -> str:
    return "msg_" + str(chat_id or "").removeprefix("chatcmpl-")


def encode(answer: bytes, counted: Usage, model: Model, cost: int | None = None) -> bytes:
    """An internal chat.completion as an Anthropic message."""
    document = decode_completion(answer)
    choice = document.first()
    message = choice.message or Turn()
    blocks: list[dict] = []
    if message.thought():
        blocks.append({"type": "thinking", "thinking": message.thought(), "signature": SIGNATURE})
    if message.text():
        blocks.append({"type": "text", "text": message.text()})
    for call in message.tool_calls or []:
        function = call.function or Function()
        try:
            arguments = msgspec.json.decode(function.arguments or "{}")
        except msgspec.DecodeError:
            arguments = {}
        blocks.append({"type": "tool_use", "id": call.id, "name": function.name, "input": arguments})
    return msgspec.json.encode(
        {
            "id": message_id(document.id),
            "type": "message",
            "role": "assistant",
            "model": model.id,
            "content": blocks,
            "stop_reason": STOP_REASONS.get(choice.finish_reason or "stop", "end_turn"),
            "stop_sequence": None,
            "usage": usage(counted, cost),
        }
    )


def count(body: dict, model: Model) -> bytes:
    """count_tokens for a model that is not Anthropic's: Mesh's upper bound of the prompt, an estimate."""
    return msgspec.json.encode({"input_tokens": prompt_bound(body, model)})
