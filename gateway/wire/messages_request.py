"""A Messages API request translated to the internal shape, for a model that does not speak the Messages API
(gateway/wire/messages.py holds the rest of the codec).

`system` (a string or text blocks) → a system message; user and assistant turns with text and image blocks (base64 →
data: URL, url → URL) → text and image_url parts; `tool_use` → assistant tool_calls; `tool_result` → tool messages
(before the rest of their turn; `is_error` said in the text as "(tool error) "); earlier turns' `thinking` /
`redacted_thinking` blocks are the model's own and go nowhere; `max_tokens`, `stop_sequences` → stop, temperature,
top_p, `top_k` (where the provider takes it); tools (custom) → function tools; tool_choice auto/any/none/tool →
auto/required/none/function, `disable_parallel_tool_use` → parallel_tool_calls=false; `metadata.user_id` → user;
`thinking` enabled (by budget_tokens: up to 4,096 low, up to 16,384 medium, else high) and `output_config.effort`
(low, medium, high; max → xhigh) → reasoning_effort, adaptive or disabled thinking → the provider's default;
`output_config.format` (json_schema) → response_format. Anything else (`cache_control`, `context_management`,
`service_tier`, document blocks, ...) has no equivalent: refused with a 400 naming it unless the model's
`ignore_fields` lists it (then dropped, and named in the answer's x-mesh-ignored-fields).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.catalog import Model
from gateway.errors import invalid
from gateway.wire.internal import Translated

EFFORTS = {"low": "low", "medium": "medium", "high": "high", "max": "xhigh"}
THINKING_BUDGETS = ((4_096, "low"), (16_384, "medium"))  # budget_tokens up to each → effort; above: high


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
