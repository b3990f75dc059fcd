"""Anthropic's Messages API behind the OpenAI shape.

Request: system/developer messages → `system`; user/assistant turns with text and image parts (data: URLs →
base64 sources, http(s) URLs → url sources); assistant `tool_calls` → `tool_use` blocks; `tool` messages →
`tool_result` blocks in a user turn; `max_tokens` (required by Anthropic: max_completion_tokens, max_tokens, else
4096), `stop` → `stop_sequences`, temperature, top_p, function tools → `tools` with `input_schema`, tool_choice,
`user` → metadata.user_id. Response: text and tool_use blocks → message content and tool_calls; stop reasons
→ finish_reason; usage input (+ cache) / output tokens → prompt / completion tokens. Streams: message_start,
content_block_start/delta/stop, message_delta, message_stop, ping and error events → chat.completion.chunk frames.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

import msgspec

from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.providers.base import (
    SSE_DONE,
    Reply,
    StreamReply,
    Upstream,
    Usage,
    error_field,
    estimate_tokens,
    message_text,
    sse,
    usage_chunk,
)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
          "pause_turn": "stop", "refusal": "content_filter"}


def _image(url: str) -> dict:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return {"type": "image", "source": {"type": "base64", "media_type": header[5:].split(";")[0], "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            blocks.append(_image(image.get("url", "") if isinstance(image, dict) else image))
    return blocks


def to_anthropic(model: Model, body: dict, stream: bool) -> dict:
    system: list[str] = []
    turns: list[dict] = []

    def add(role: str, blocks: list[dict]) -> None:
        if turns and turns[-1]["role"] == role:  # Anthropic wants alternating turns: merge
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(message_text([message]))
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id", ""),
                          "content": message_text([message])}])
        elif role == "assistant":
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                arguments = function.get("arguments") or "{}"
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                               "input": msgspec.json.decode(arguments) if isinstance(arguments, str) else arguments})
            add("assistant", blocks)
        else:
            add("user", _blocks(message.get("content")))
    request: dict[str, Any] = {
        "model": model.upstream, "messages": turns, "stream": stream,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS,
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
        request["tools"] = [{"name": t["function"]["name"], "description": t["function"].get("description", ""),
                             "input_schema": t["function"].get("parameters") or {"type": "object"}}
                            for t in body["tools"] if t.get("type") == "function"]
    choice = body.get("tool_choice")
    if choice == "required":
        request["tool_choice"] = {"type": "any"}
    elif choice == "auto":
        request["tool_choice"] = {"type": "auto"}
    elif isinstance(choice, dict) and choice.get("function"):
        request["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    if body.get("user"):
        request["metadata"] = {"user_id": str(body["user"])}
    return request


def _usage(usage: dict) -> Usage:
    prompt = (usage.get("input_tokens") or 0) + (usage.get("cache_creation_input_tokens") or 0) \
        + (usage.get("cache_read_input_tokens") or 0)
    return Usage(prompt, usage.get("output_tokens") or 0)


def to_openai(model: Model, message: dict) -> tuple[dict, Usage]:
    text = "".join(b.get("text", "") for b in message.get("content", []) if b.get("type") == "text")
    calls = [{"id": b["id"], "type": "function", "function": {"name": b["name"],
                                                               "arguments": msgspec.json.encode(b.get("input", {})).decode()}}
             for b in message.get("content", []) if b.get("type") == "tool_use"]
    usage = _usage(message.get("usage") or {})
    reply: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        reply["tool_calls"] = calls
    document = {
        "id": "chatcmpl-" + str(message.get("id", uuid.uuid4().hex)), "object": "chat.completion",
        "created": int(time.time()), "model": model.id,
        "choices": [{"index": 0, "message": reply, "finish_reason": FINISH.get(message.get("stop_reason"), "stop")}],
        "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                  "total_tokens": usage.prompt_tokens + usage.completion_tokens},
    }
    return document, usage


class AnthropicAdapter:
    def __init__(self, provider: Provider):
        self.provider = provider
        headers = {"anthropic-version": API_VERSION, **({"x-api-key": provider.api_key} if provider.api_key else {})}
        self.upstream = Upstream(provider, headers, error_field)

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post("/messages", to_anthropic(model, body, False))
        document, usage = to_openai(model, msgspec.json.decode(response.content))
        return Reply(msgspec.json.encode(document), usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        response = await self.upstream.stream("/messages", to_anthropic(model, body, True))
        prompt_text = message_text(body.get("messages") or [])
        reply: StreamReply

        async def frames() -> AsyncIterator[bytes]:
            base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model.id}
            usage = {"input_tokens": 0, "output_tokens": 0}
            reported, generated = False, []
            tools: dict[int, int] = {}  # Anthropic block index -> OpenAI tool call index

            def chunk(delta: dict, finish: str | None = None) -> bytes:
                return sse(msgspec.json.encode({**base, "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish}]}))

            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    event = msgspec.json.decode(line[5:].strip())
                    kind = event.get("type")
                    if kind == "message_start":
                        usage.update(event["message"].get("usage") or {})
                        yield chunk({"role": "assistant", "content": ""})
                    elif kind == "content_block_start" and event["content_block"].get("type") == "tool_use":
                        block = event["content_block"]
                        tools[event["index"]] = len(tools)
                        yield chunk({"tool_calls": [{"index": tools[event["index"]], "id": block["id"],
                                                     "type": "function",
                                                     "function": {"name": block["name"], "arguments": ""}}]})
                    elif kind == "content_block_delta":
                        delta = event["delta"]
                        reply.mark_first_token()
                        if delta.get("type") == "text_delta":
                            generated.append(delta["text"])
                            yield chunk({"content": delta["text"]})
                        elif delta.get("type") == "input_json_delta":
                            generated.append(delta.get("partial_json", ""))
                            yield chunk({"tool_calls": [{"index": tools.get(event["index"], 0),
                                                         "function": {"arguments": delta.get("partial_json", "")}}]})
                    elif kind == "message_delta":
                        usage.update(event.get("usage") or {})
                        reported = True
                        yield chunk({}, FINISH.get((event.get("delta") or {}).get("stop_reason"), "stop"))
                    elif kind == "error":
                        error = event.get("error") or {}
                        raise GatewayError(502, f"provider {self.provider.name} failed mid-stream: "
                                                f"{error.get('message', 'unknown error')}", "upstream_error",
                                           "upstream_error")
                    elif kind == "message_stop":
                        break
                final = _usage(usage)
                reply.usage = final if reported else Usage(final.prompt_tokens or estimate_tokens(prompt_text),
                                                           estimate_tokens("".join(generated)), True)
                if include_usage:
                    yield usage_chunk(base, reply.usage)
                yield SSE_DONE
            finally:
                if not reported:  # cut short: bill what was generated, flagged as estimated
                    reply.usage = Usage(usage["input_tokens"] or estimate_tokens(prompt_text),
                                        estimate_tokens("".join(generated)), True)
                reply.mark_done()
                await response.aclose()

        reply = StreamReply(frames())
        return reply

    async def aclose(self) -> None:
        await self.upstream.aclose()
