"""Anthropic's Messages API (POST /v1/messages) as a front door: its codec to and from the internal shape.

To an Anthropic-kind model the request passes through as sent (gateway/providers/anthropic.py `messages`); this
module then only checks its fields (`PASS_FIELDS`, priced server tools refused), bounds its prompt and picks the
headers that go with it. To any other model it is translated:

- request: `system` (a string or text blocks) → a system message; user and assistant turns with text and image
  blocks (base64 → data: URL, url → URL) → text and image_url parts; `tool_use` → assistant tool_calls;
  `tool_result` → tool messages (before the rest of their turn; `is_error` said in the text as "(tool error) ");
  earlier turns' `thinking` / `redacted_thinking` blocks are the model's own and go nowhere; `max_tokens`,
  `stop_sequences` → stop, temperature, top_p, `top_k` (where the provider takes it); tools (custom) → function
  tools; tool_choice auto/any/none/tool → auto/required/none/function, `disable_parallel_tool_use` →
  parallel_tool_calls=false; `metadata.user_id` → user; `thinking` enabled (by budget_tokens: up to 4,096 low, up
  to 16,384 medium, else high) and `output_config.effort` (low, medium, high; max → xhigh) → reasoning_effort,
  adaptive or disabled thinking → the provider's default; `output_config.format` (json_schema) → response_format.
  Anything else (`cache_control`, `context_management`, `service_tier`, document blocks, ...) has no equivalent:
  refused with a 400 naming it unless the model's `ignore_fields` lists it (then dropped, and named in the
  answer's x-mesh-ignored-fields).
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
from gateway.wire.internal import (
    Function,
    Translated,
    Turn,
    decode_completion,
)
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
EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "xhigh"}
THINKING_BUDGETS = ((4_096, "low"), (16_384, "medium"))  # budget_tokens up to each → effort; above: high
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


# ---- translation to the internal shape ----


def translate(body: dict, model: Model, accepted: frozenset[str]) -> Translated:
    """The request in the internal shape, for a model that does not speak the Messages API."""
    out = Translated(model, accepted)
    out.body["model"] = body["model"]
    messages: list[dict] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system, out, "system")})
    for n, message in enumerate(body["messages"]):
        messages.extend(_turn(message, n, out))
    out.body["messages"] = messages
    out.body["max_tokens"] = body["max_tokens"]
    if body.get("stream"):
        out.body["stream"] = True
        out.body["stream_options"] = {"include_usage": True}
    handled = {"model", "messages", "max_tokens", "stream", "system"}
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            out.set(name, body[name], name)
        handled.add(name)
    if body.get("stop_sequences"):
        out.set("stop", list(body["stop_sequences"]), "stop_sequences")
    handled.add("stop_sequences")
    if body.get("tools"):
        out.set("tools", [_tool(t, out) for t in body["tools"]], "tools")
    handled.add("tools")
    _tool_choice(body.get("tool_choice"), out)
    handled.add("tool_choice")
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        out.set("user", str(metadata["user_id"]), "metadata")
    handled.add("metadata")
    _reasoning(body.get("thinking"), body.get("output_config"), out)
    handled |= {"thinking", "output_config"}
    for name in body.keys() - handled:
        out.no_equivalent(name)
    return out


def _text(content: Any, out: Translated, where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content or []:
        if not isinstance(block, dict) or block.get("type") != "text":
            out.no_equivalent(f"{where}.{str(block.get('type') if isinstance(block, dict) else block)[:40]}")
            continue
        _block_extras(block, out)
        texts.append(str(block.get("text", "")))
    return "\n\n".join(texts)


def _block_extras(block: dict, out: Translated) -> None:
    for name in block.keys() - {"type", "text", "source", "id", "name", "input", "tool_use_id", "content", "is_error"}:
        if block[name] not in (None, [], {}):  # a field left empty asks for nothing
            out.no_equivalent(name)


def _image(block: dict) -> dict:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif source.get("type") == "url":
        url = str(source.get("url", ""))
    else:
        raise invalid(
            f"image source of type {str(source.get('type'))[:40]!r} cannot be translated; send base64 or url",
            "unsupported_content",
            "messages",
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _turn(message: dict, n: int, out: Translated) -> list[dict]:
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise invalid(f"messages.{n}.role must be 'user' or 'assistant'", "invalid_request", "messages")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    parts: list[dict] = []
    calls: list[dict] = []
    results: list[dict] = []
    for block in content or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in ("text", "image", "tool_use", "tool_result"):
            _block_extras(block, out)
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block))
        elif kind == "tool_use" and role == "assistant":
            arguments = msgspec.json.encode(block.get("input") or {}).decode()
            function = {"name": block.get("name"), "arguments": arguments}
            calls.append({"id": block.get("id"), "type": "function", "function": function})
        elif kind == "tool_result" and role == "user":
            text = _tool_result_text(block.get("content"), out)
            if block.get("is_error"):
                text = "(tool error) " + text
            results.append({"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text})
        elif kind in ("thinking", "redacted_thinking") and role == "assistant":
            continue  # the model's own earlier reasoning: no provider but Anthropic takes it back
        else:
            out.no_equivalent(f"{kind}" if isinstance(kind, str) else "messages", "a content block of this type")
    turns: list[dict] = list(results)
    if role == "assistant":
        if parts or calls:
            turn: dict[str, Any] = {"role": "assistant", "content": _joined(parts) if parts else None}
            if calls:
                turn["tool_calls"] = calls
            turns.append(turn)
    elif parts:
        turns.append({"role": "user", "content": parts})
    return turns


def _joined(parts: list[dict]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") == "text")


def _tool_result_text(content: Any, out: Translated) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        else:
            out.no_equivalent("tool_result.content", "a tool result here is text only")
    return "\n".join(texts)


def _tool(tool: Any, out: Translated) -> dict:
    if not isinstance(tool, dict) or tool.get("type") not in (None, "custom"):
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise invalid(
            f"the tool type {str(kind)[:60]!r} has no equivalent for model {out.model.id!r}: only custom tools "
            "(name, description, input_schema) are translated",
            "unsupported_parameter",
            "tools",
        )
    for name in tool.keys() - {"type", "name", "description", "input_schema"}:
        out.no_equivalent(name)
    function = {"name": tool.get("name"), "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, out: Translated) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "tool":
        out.set("tool_choice", {"type": "function", "function": {"name": choice.get("name")}}, "tool_choice")
    elif kind in ("auto", "any", "none"):
        out.set("tool_choice", {"auto": "auto", "any": "required", "none": "none"}[kind], "tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out.set("parallel_tool_calls", False, "tool_choice")


def _reasoning(thinking: Any, config: Any, out: Translated) -> None:
    effort = None
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens") or 0
        effort = next((e for limit, e in THINKING_BUDGETS if budget <= limit), "high")
    if isinstance(config, dict):
        for name in config.keys() - {"effort", "format"}:
            out.no_equivalent(f"output_config.{name}")
        if config.get("effort") is not None:
            if config["effort"] not in EFFORTS:
                raise invalid(
                    f"output_config.effort must be one of {', '.join(EFFORTS)}", "invalid_request", "output_config"
                )
            effort = EFFORTS[config["effort"]]
        fmt = config.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = {"name": "output", "schema": fmt.get("schema") or {}, "strict": True}
            out.set("response_format", {"type": "json_schema", "json_schema": schema}, "output_config")
        elif fmt is not None:
            out.no_equivalent("output_config.format")
    if effort is not None:
        out.set("reasoning_effort", effort, "thinking" if not isinstance(config, dict) else "output_config")


# ---- the internal answer and stream, encoded ----


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
