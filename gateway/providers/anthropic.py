"""Anthropic's Messages API (POST {base_url}/messages, `anthropic-version: 2023-06-01`) behind the OpenAI shape.

Request: system/developer messages → top-level `system`; user/assistant turns (consecutive same-role turns merged,
empty ones dropped) with text and image parts (data: URLs → base64 sources, other URLs → url sources); assistant
`tool_calls` → `tool_use` blocks; `tool` messages → `tool_result` blocks in one user turn; `max_tokens` (required
there: max_completion_tokens, max_tokens, else the model's max_output_tokens); `stop` → `stop_sequences`;
temperature, top_p; function tools → `tools` with `input_schema`; tool_choice auto/required/none/named →
auto/any/none/tool, and parallel_tool_calls=false → `disable_parallel_tool_use`; `user` → metadata.user_id.
Response: text and tool_use blocks → message content and tool_calls (arguments as a JSON string); stop_reason →
finish_reason; usage input (+ cache creation + cache read, which input_tokens leaves out) / output tokens (thinking
included) → prompt / completion tokens, with cache_read_input_tokens → cached and cache_creation_input_tokens →
cache-write prompt tokens.
Stream: message_start (input and cache usage) → role chunk; content_block_start of a tool_use → tool call id and
name; text_delta / input_json_delta → content / argument fragments; message_delta (stop_reason, cumulative usage:
output tokens, and in newer answers input and cache counts too) → the finish chunk; message_stop ends it; ping is
ignored; an `error` event fails the stream. A stream that breaks off before message_delta is billed from an estimate
(of the whole prompt, unless message_start counted it, and everything generated, thinking included), flagged as
such.
Wire format as documented at docs.anthropic.com/en/api/messages, /messages-streaming and /errors.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from gateway.answer_fields import cost_fields
from gateway.catalog import Model, Provider
from gateway.errors import GatewayError, invalid
from gateway.fields import ANTHROPIC_CHAT_FIELDS, content_parts, data_url
from gateway.providers.upstream_errors import error_field, failed_mid_stream
from gateway.providers.base import (
    Reply,
    StreamReply,
    Upstream,
    Usage,
    estimated_usage,
    message_text,
)
from gateway.providers.streams import relayed_stream, translated_stream

API_VERSION = "2023-06-01"
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
TOOL_CHOICE = {"auto": "auto", "required": "any", "none": "none"}


def _image(url: str) -> dict:
    inline = data_url(url)
    if inline is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": inline[0], "data": inline[1]}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict]:
    return [
        {"type": "text", "text": value} if kind == "text" else _image(value)
        for kind, value in content_parts(content, "anthropic")
    ]


def _tool_use(call: dict) -> dict:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = msgspec.json.decode(arguments) if isinstance(arguments, str) else arguments
    except msgspec.DecodeError:
        raise invalid(
            f"the arguments of tool call {call.get('id')!r} are not JSON", "invalid_tool_call", "messages"
        ) from None
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": tool_input}


def _tool_choice(body: dict) -> dict | None:
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        result = {"type": "tool", "name": choice["function"]["name"]}
    elif choice in TOOL_CHOICE:
        result = {"type": TOOL_CHOICE[choice]}
    else:
        result = None
    if body.get("parallel_tool_calls") is False and body.get("tools") and (result or {}).get("type") != "none":
        result = {**(result or {"type": "auto"}), "disable_parallel_tool_use": True}
    return result


def to_anthropic(model: Model, body: dict, stream: bool) -> dict:
    if (body.get("n") or 1) > 1:
        raise invalid(f"model {model.id!r} answers with one choice: n must be 1", "unsupported_parameter", "n")
    system: list[str] = []
    turns: list[dict] = []

    def add(role: str, blocks: list[dict]) -> None:
        if not blocks:  # Anthropic refuses empty turns
            return
        if turns and turns[-1]["role"] == role:  # and wants tool results of one turn in one user message
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message_text([message]))
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.get("tool_call_id", ""),
                        "content": message_text([message]),
                    }
                ],
            )
        elif role == "assistant":
            add("assistant", _blocks(message.get("content")) + [_tool_use(c) for c in message.get("tool_calls") or []])
        else:
            add("user", _blocks(message.get("content")))
    request: dict[str, Any] = {
        "model": model.upstream,
        "messages": turns,
        "stream": stream,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or model.max_output_tokens,
    }
    if system:
        request["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            request[name] = body[name]
    if body.get("tools"):
        request["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in body["tools"]
            if t.get("type") == "function"
        ]
    tool_choice = _tool_choice(body)
    if tool_choice:
        request["tool_choice"] = tool_choice
    if body.get("user"):
        request["metadata"] = {"user_id": str(body["user"])}
    return request


def _usage(usage: dict) -> Usage:
    """Anthropic's usage as Mesh counts it: input_tokens leaves out the cache reads and writes, which Mesh's
    prompt_tokens includes; output_tokens already includes thinking (which Anthropic does not count apart)."""
    cached, written = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
    return Usage(
        (usage.get("input_tokens") or 0) + cached + written,
        usage.get("output_tokens") or 0,
        cached_prompt_tokens=cached,
        cache_write_tokens=written,
    )


def to_openai(model: Model, message: dict, body: dict) -> tuple[dict, Usage]:
    content = message.get("content") or []
    text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
    calls = [
        {
            "id": b["id"],
            "type": "function",
            "function": {"name": b["name"], "arguments": msgspec.json.encode(b.get("input", {})).decode()},
        }
        for b in content
        if b.get("type") == "tool_use"
    ]
    if message.get("usage"):
        usage = _usage(message["usage"])
    else:
        usage = estimated_usage(body, text)
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        reply["tool_calls"] = calls
    document = {
        "id": "chatcmpl-" + str(message.get("id") or uuid.uuid4().hex),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model.id,
        "choices": [{"index": 0, "message": reply, "finish_reason": FINISH.get(message.get("stop_reason"), "stop")}],
        "usage": usage.openai(),
    }
    return document, usage


class AnthropicAdapter:
    chat_fields = ANTHROPIC_CHAT_FIELDS

    def __init__(self, provider: Provider):
        self.provider = provider
        headers = {"anthropic-version": API_VERSION, **({"x-api-key": provider.api_key} if provider.api_key else {})}
        self.upstream = Upstream(provider, headers, error_field)

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post("/messages", to_anthropic(model, body, False))
        try:
            message = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise self.upstream.broken("sent a response that is not a message") from None
        document, usage = to_openai(model, message, body)
        return Reply(msgspec.json.encode(document), usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        sent = time.perf_counter_ns()
        response = await self.upstream.stream("/messages", to_anthropic(model, body, True))
        incomplete = "ended the stream before the message was complete"
        return translated_stream(
            self.upstream, response, sent, model.id, _Events(self.provider, body), include_usage, incomplete
        )

    # Anthropic's Messages API as its clients send it (POST /v1/messages to an Anthropic-kind model): the body goes
    # upstream as sent (its model the upstream's name), with the client's anthropic-version and anthropic-beta
    # headers (`head`, from `Upstream.head_with`); the answer and stream come back as the upstream sent them, and
    # the usage billed is read from them.

    async def messages(self, model: Model, body: dict, head: bytes, query: str = "") -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post("/messages" + query, {**body, "model": model.upstream}, head)
        try:
            message = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise self.upstream.broken("sent a response that is not a message") from None
        reported = message.get("usage") if isinstance(message, dict) else None
        usage = _usage(reported) if isinstance(reported, dict) else estimated_usage({}, _generated(message))
        return Reply(response.content, usage, (time.perf_counter_ns() - started) // 1000)

    async def messages_stream(self, model: Model, body: dict, head: bytes, query: str = "") -> StreamReply:
        sent = time.perf_counter_ns()
        response = await self.upstream.stream("/messages" + query, {**body, "model": model.upstream}, head=head)
        counts: dict = {}
        finished = False  # message_delta seen: the usage is final
        generated: list[str] = []
        failure: GatewayError | None = None  # an `error` event: raised once its event has gone out

        def frame(line: str, reply: StreamReply) -> bytes:
            """Each line as the upstream sent it; its data read for the usage, the first token and the end."""
            nonlocal finished, failure
            if failure is not None:
                raise failure
            if line.startswith("data:"):
                event = msgspec.json.decode(line[5:].strip())
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "message_start":
                    message = event.get("message") or {}
                    counts.update(message.get("usage") or {})
                    if "model" in message:  # the answer names the Mesh id (gateway/answer_fields.py)
                        message["model"] = model.id
                        return b"data: " + msgspec.json.encode(event) + b"\n"
                elif kind == "content_block_delta":
                    delta = event.get("delta") or {}
                    text = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
                    if text:
                        reply.mark_first_token()
                        generated.append(text)
                elif kind == "message_delta":
                    counts.update((k, v) for k, v in (event.get("usage") or {}).items() if v is not None)
                    finished = True
                    cost = None if reply.priced is None else reply.priced(_usage(counts))
                    if cost is not None and isinstance(event.get("usage"), dict):  # the charge, in the answer
                        event["usage"].update(cost_fields(cost))
                        return b"data: " + msgspec.json.encode(event) + b"\n"
                elif kind == "message_stop":
                    reply.ended = True
                elif kind == "error":  # relayed as the upstream sent it, the event complete, then billed
                    failure = failed_mid_stream(self.provider, str((event.get("error") or {}).get("message")))
                    return (line + "\n\n").encode()
            return (line + "\n").encode()

        def at_end() -> None:
            if failure is not None:
                raise failure
            if not finished:
                raise self.upstream.broken("ended the stream before the message was complete")

        def settle(reply: StreamReply) -> None:
            reported = _usage(counts)
            reply.usage = reported if finished else estimated_usage({}, "".join(generated), reported)

        def decoded(line: str, reply: StreamReply) -> bytes:
            try:
                return frame(line, reply)
            except msgspec.DecodeError:
                raise self.upstream.broken("sent a stream event that is not JSON") from None

        return relayed_stream(self.upstream, response, sent, decoded, at_end, settle)

    async def count_tokens(self, model: Model, body: dict, head: bytes) -> bytes:
        """POST /v1/messages/count_tokens as sent (Anthropic does not charge for it)."""
        return (await self.upstream.post("/messages/count_tokens", {**body, "model": model.upstream}, head)).content

    async def aclose(self) -> None:
        await self.upstream.aclose()


class _Events:
    """Anthropic's stream events as OpenAI chunks (see the module docstring)."""

    def __init__(self, provider: Provider, body: dict):
        self.provider, self.body = provider, body
        self.counts: dict = {}  # usage as reported so far
        self.finished = False  # message_delta seen: the usage is final
        self.stopped = False
        self.generated: list[str] = []
        self.tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index

    def usage(self) -> Usage:
        reported = _usage(self.counts)  # cut short: an estimate, flagged
        return reported if self.finished else estimated_usage(self.body, "".join(self.generated), reported)

    def read(self, event: dict, reply: StreamReply) -> list[dict]:
        kind = event.get("type")
        if kind == "message_start":
            self.counts.update(event["message"].get("usage") or {})
            return [_choice({"role": "assistant", "content": ""})]
        if kind == "content_block_start" and event["content_block"].get("type") == "tool_use":
            block = event["content_block"]
            self.tools[event["index"]] = len(self.tools)
            call = {"id": block["id"], "type": "function", "function": {"name": block["name"], "arguments": ""}}
            return [_choice({"tool_calls": [{"index": self.tools[event["index"]], **call}]})]
        if kind == "content_block_delta":
            delta = event["delta"]
            if delta.get("type") == "text_delta":
                reply.mark_first_token()
                self.generated.append(delta["text"])
                return [_choice({"content": delta["text"]})]
            if delta.get("type") == "thinking_delta":  # not relayed, but billed
                self.generated.append(delta.get("thinking", ""))
            elif delta.get("type") == "input_json_delta":
                reply.mark_first_token()
                self.generated.append(delta.get("partial_json", ""))
                function = {"arguments": delta.get("partial_json", "")}
                return [_choice({"tool_calls": [{"index": self.tools.get(event["index"], 0), "function": function}]})]
        elif kind == "message_delta":  # cumulative counts; a count left null stays as it was
            self.counts.update((k, v) for k, v in (event.get("usage") or {}).items() if v is not None)
            self.finished = True
            return [_choice({}, FINISH.get((event.get("delta") or {}).get("stop_reason"), "stop"))]
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = event.get("error") or {}
            raise failed_mid_stream(self.provider, str(error.get("message", "unknown error")))
        return []


def _choice(delta: dict, finish: str | None = None) -> dict:
    return {"index": 0, "delta": delta, "finish_reason": finish}


def _generated(message: Any) -> str:
    """The text, thinking and tool input an Anthropic message generated, for an estimate of its output."""
    content = message.get("content") if isinstance(message, dict) else None
    return "".join(
        str(b.get("text") or b.get("thinking") or msgspec.json.encode(b.get("input") or {}).decode())
        for b in content or []
        if isinstance(b, dict)
    )
