"""OpenAI's Responses API (POST /v1/responses) as a front door: its codec to and from the internal shape, for every
provider kind. Stateless: nothing is stored, so `store: true`, `previous_response_id`, `conversation` and
`background` are refused with a 400 that says so.

- request: `instructions` → a system message first; `input` (a string, or items) → messages: role messages with
  input_text / output_text / refusal → text parts, input_image (image_url) → image_url parts; `function_call`
  items → the assistant's tool_calls (consecutive ones in one turn), `function_call_output` items → tool
  messages; `reasoning` items (the model's own, handed back) go nowhere; function tools → function tools (hosted
  tools such as web_search, file_search, computer_use, code_interpreter are refused naming them); tool_choice,
  parallel_tool_calls, temperature, top_p, user, safety_identifier, prompt_cache_key, service_tier as they are;
  `max_output_tokens` → max_tokens; `text.format` json_schema / json_object → response_format, `text.verbosity`
  → verbosity; `reasoning.effort` → reasoning_effort (where the provider has it). Anything else with a value is
  refused naming it unless the model's `ignore_fields` lists it (then dropped and named in x-mesh-ignored-fields).
- answer: a `response` with a `message` item (output_text) and `function_call` items; usage input_tokens (with
  input_tokens_details.cached_tokens), output_tokens (with output_tokens_details.reasoning_tokens), total_tokens;
  finish_reason length → status `incomplete` (max_output_tokens).
- stream: response.created, response.in_progress, then per item response.output_item.added,
  response.content_part.added, response.output_text.delta / .done, response.content_part.done (or
  response.function_call_arguments.delta / .done), response.output_item.done, and response.completed (or
  response.incomplete) with the whole response and its usage; every event has its sequence_number.
"""

from __future__ import annotations

import os
import time
from typing import Any

import msgspec

from gateway.answer_fields import cost_fields
from gateway.catalog import Model
from gateway.errors import invalid
from gateway.providers.base import Usage
from gateway.wire.internal import (
    Function,
    Translated,
    Turn,
    decode_completion,
)

PATH = "/v1/responses"
HOSTED_TOOLS = frozenset(
    {
        "web_search",
        "web_search_preview",
        "web_search_preview_2025_03_11",
        "file_search",
        "computer_use",
        "computer_use_preview",
        "code_interpreter",
        "image_generation",
        "mcp",
        "local_shell",
        "shell",
        "apply_patch",
    }
)
STATEFUL = {
    "previous_response_id": "responses are not stored, so there is none to continue: send the whole conversation "
    "in 'input'",
    "conversation": "conversations are not stored: send the whole conversation in 'input'",
    "background": "background responses need stored responses, which Mesh does not keep",
}
# Fields with the same name and meaning in the internal (Chat Completions) request.
SAME = ("temperature", "top_p", "parallel_tool_calls", "user", "safety_identifier", "prompt_cache_key", "service_tier")
READ = frozenset({"model", "input", "instructions", "stream", "store", "tools", "tool_choice", "max_output_tokens"})
READ |= {"text", "reasoning", *SAME, *STATEFUL}
EMPTY = (None, [], {}, "")
MAX_INPUT_ITEMS = 10_000  # items of one `input`


class Request(msgspec.Struct):
    """The fields the gateway itself reads."""

    model: str | None = None
    input: str | list[Any] = ""
    stream: bool = False
    max_output_tokens: int | None = None


def parse(body: dict) -> Request:
    try:
        request = msgspec.convert(body, Request)
    except msgspec.ValidationError as exc:
        raise invalid(f"invalid request: {exc}", "invalid_request") from None
    if not request.input:
        raise invalid("'input' must be a non-empty string or list of items", "invalid_request", "input")
    if isinstance(request.input, list) and len(request.input) > MAX_INPUT_ITEMS:
        raise invalid(f"'input' holds at most {MAX_INPUT_ITEMS} items", "invalid_request", "input")
    if request.max_output_tokens is not None and request.max_output_tokens < 1:
        raise invalid("'max_output_tokens' must be at least 1", "invalid_request", "max_output_tokens")
    if body.get("store"):
        raise invalid(
            "store: true is not available: Mesh's /v1/responses is stateless and stores no response; send "
            "store: false (the default here)",
            "unsupported_parameter",
            "store",
        )
    for name, why in STATEFUL.items():
        if body.get(name) not in EMPTY and body.get(name) is not False:
            raise invalid(
                f"{name!r} is not available: Mesh's /v1/responses is stateless; {why}", "unsupported_parameter", name
            )
    return request


def translate(body: dict, model: Model, accepted: frozenset[str]) -> Translated:
    out = Translated(model, accepted)
    out.body["model"] = body.get("model")
    messages: list[dict] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": str(body["instructions"])})
    items = body["input"]
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    else:
        for n, item in enumerate(items):
            _item(item, n, messages, out)
    out.body["messages"] = messages
    if body.get("max_output_tokens") is not None:
        out.body["max_tokens"] = body["max_output_tokens"]
    if body.get("stream"):
        out.body["stream"] = True
        out.body["stream_options"] = {"include_usage": True}
    for name in SAME:
        if body.get(name) is not None:
            out.set(name, body[name], name)
    if body.get("tools"):
        out.set("tools", [_tool(t) for t in body["tools"]], "tools")
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        out.set("tool_choice", {"type": "function", "function": {"name": choice.get("name")}}, "tool_choice")
    elif isinstance(choice, str):
        out.set("tool_choice", choice, "tool_choice")
    elif choice is not None:
        out.no_equivalent("tool_choice", "only auto, none, required and a named function are translated")
    _text(body.get("text"), out)
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict):
        if reasoning.get("effort") is not None:
            out.set("reasoning_effort", reasoning["effort"], "reasoning")
        for name in reasoning.keys() - {"effort"}:
            if reasoning[name] not in EMPTY:
                out.no_equivalent(f"reasoning.{name}")
    for name in body.keys() - READ:
        if body[name] not in EMPTY and not (name == "truncation" and body[name] == "disabled"):
            out.no_equivalent(name)
    return out


def _text(text: Any, out: Translated) -> None:
    if not isinstance(text, dict):
        return
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        out.set("response_format", {"type": "json_schema", "json_schema": schema}, "text.format")
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        out.set("response_format", {"type": "json_object"}, "text.format")
    elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
        out.no_equivalent("text.format")
    if text.get("verbosity") is not None:
        out.set("verbosity", text["verbosity"], "text.verbosity")


def _tool(tool: Any) -> dict:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind != "function":
        name = str(kind)[:60]
        hosted = kind in HOSTED_TOOLS or str(kind).startswith(("web_search", "computer_use", "file_search"))
        raise invalid(
            f"the tool {name!r} is not available through Mesh: "
            + ("it is a tool the provider hosts and charges for apart; " if hosted else "")
            + "only function tools are",
            "unsupported_parameter",
            "tools",
        )
    function = {"name": tool.get("name"), "parameters": tool.get("parameters") or {"type": "object"}}
    for name in ("description", "strict"):
        if tool.get(name) is not None:
            function[name] = tool[name]
    return {"type": "function", "function": function}


def _item(item: Any, n: int, messages: list[dict], out: Translated) -> None:
    if not isinstance(item, dict):
        raise invalid(f"input[{n}] must be an object", "invalid_request", "input")
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise invalid(f"input[{n}].role must be user, assistant, system or developer", "invalid_request", "input")
        content = item.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            return
        parts = [part for part in (_part(p, out) for p in content or []) if part is not None]
        if role == "assistant":
            messages.append({"role": "assistant", "content": "".join(p.get("text", "") for p in parts)})
        else:
            messages.append({"role": role, "content": parts})
    elif kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
        }
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # calls of one turn, after its text if any
            last.setdefault("tool_calls", []).append(call)
            if last.get("content") == "":
                last["content"] = None
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(str(p.get("text", "")) for p in output if isinstance(p, dict))
        messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": str(output or "")})
    elif kind == "reasoning":
        return  # the model's own earlier reasoning, handed back: the internal shape has no place for it
    elif kind == "item_reference":
        raise invalid(
            "input items of type 'item_reference' are not available: Mesh's /v1/responses is stateless and stores no "
            "items; send the items themselves",
            "unsupported_parameter",
            "input",
        )
    else:
        out.no_equivalent(f"input.{str(kind)[:40]}", "an input item of this type")


def _part(part: Any, out: Translated) -> dict | None:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind == "input_image":
        if part.get("file_id"):
            raise invalid(
                "input_image parts naming an uploaded file ('file_id') are not available through Mesh: file ids belong "
                "to a provider account; send image_url (a URL or a data: URL)",
                "unsupported_content",
                "input",
            )
        image = {"url": part.get("image_url", "")}
        if part.get("detail") not in (None, "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    out.no_equivalent(f"input.{str(kind)[:40]}", "a content part of this type")
    return None


# ---- the internal answer and stream, encoded ----


def usage(counted: Usage, cost: int | None = None) -> dict:
    """A response's usage, with the cost charged for it once known (gateway/answer_fields.py)."""
    return ({} if cost is None else cost_fields(cost)) | {
        "input_tokens": counted.prompt_tokens,
        "input_tokens_details": {"cached_tokens": counted.cached_prompt_tokens},
        "output_tokens": counted.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": counted.reasoning_tokens},
        "total_tokens": counted.prompt_tokens + counted.completion_tokens,
    }


def response_object(
    response_id: str,
    model: Model,
    body: dict,
    status: str,
    output: list,
    counted: Usage | None,
    cost: int | None = None,
) -> dict:
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": incomplete_details(status),
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model.id,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": False,
        "temperature": body.get("temperature"),
        "text": {"format": fmt or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": usage(counted, cost) if counted is not None else None,
        "metadata": body.get("metadata") or {},
    }


def incomplete_details(status: str) -> dict | None:
    return {"reason": "max_output_tokens"} if status == "incomplete" else None


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def message_item(item_id: str, text: str, status: str = "completed") -> dict:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": [part]}


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def encode(answer: bytes, counted: Usage, model: Model, body: dict, cost: int | None = None) -> bytes:
    """An internal chat.completion as a `response`."""
    choice = decode_completion(answer).first()
    message = choice.message or Turn()
    output: list[dict] = []
    if message.text():
        output.append(message_item(new_id("msg"), message.text() or ""))
    for call in message.tool_calls or []:
        function = call.function or Function()
        output.append(call_item(new_id("fc"), call.id or new_id("call"), function.name or "", function.arguments or ""))
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    return msgspec.json.encode(response_object(new_id("resp"), model, body, status, output, counted, cost))
