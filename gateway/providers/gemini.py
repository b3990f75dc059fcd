"""Google Gemini (`generateContent` / `streamGenerateContent?alt=sse`) behind the OpenAI shape.

Request: turns → `contents` (roles user/model) with text, inlineData (data: image URLs) and fileData (other
URLs) parts; system messages → `systemInstruction`; `generationConfig` from max tokens, temperature, top_p, stop,
n (candidateCount) and response_format (JSON mime type and schema); function tools → `functionDeclarations`;
assistant tool_calls → functionCall parts; tool messages → functionResponse parts. Response: candidates →
choices (text and tool_calls), finishReason → finish_reason, usageMetadata → usage (thinking tokens bill as
completion). Streams: each SSE chunk is a GenerateContentResponse; the last usageMetadata is the usage.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, AsyncIterator

import msgspec

from gateway.catalog import Model, Provider
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

FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter", "RECITATION": "content_filter",
          "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter"}


def _parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:"):
                header, _, data = url.partition(",")
                parts.append({"inlineData": {"mimeType": header[5:].split(";")[0], "data": data}})
            else:
                parts.append({"fileData": {"fileUri": url}})
    return parts


def to_gemini(body: dict) -> dict:
    system, contents, names = [], [], {}
    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append({"text": message_text([message])})
        elif role == "assistant":
            parts = _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                function = call.get("function", {})
                names[call.get("id")] = function.get("name")
                arguments = function.get("arguments") or "{}"
                parts.append({"functionCall": {"name": function.get("name"), "args": msgspec.json.decode(arguments)
                                               if isinstance(arguments, str) else arguments}})
            contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            result = message_text([message])
            try:
                response = msgspec.json.decode(result)
            except msgspec.DecodeError:
                response = None
            contents.append({"role": "user", "parts": [{"functionResponse": {
                "name": names.get(message.get("tool_call_id"), "tool"),
                "response": response if isinstance(response, dict) else {"result": result}}}]})
        else:
            contents.append({"role": "user", "parts": _parts(message.get("content"))})
    config: dict[str, Any] = {}
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    for key, value in (("maxOutputTokens", limit), ("temperature", body.get("temperature")),
                       ("topP", body.get("top_p")), ("candidateCount", body.get("n"))):
        if value is not None:
            config[key] = value
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = schema
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    if config:
        request["generationConfig"] = config
    if body.get("tools"):
        request["tools"] = [{"functionDeclarations": [
            {"name": t["function"]["name"], "description": t["function"].get("description", ""),
             **({"parameters": t["function"]["parameters"]} if t["function"].get("parameters") else {})}
            for t in body["tools"] if t.get("type") == "function"]}]
    return request


def _usage(metadata: dict | None) -> Usage | None:
    if not metadata:
        return None
    return Usage(metadata.get("promptTokenCount") or 0,
                 (metadata.get("candidatesTokenCount") or 0) + (metadata.get("thoughtsTokenCount") or 0))


def _choice(candidate: dict) -> tuple[str, list[dict]]:
    text, calls = [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            text.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            calls.append({"id": "call_" + uuid.uuid4().hex[:12], "type": "function", "function": {
                "name": call["name"], "arguments": msgspec.json.encode(call.get("args") or {}).decode()}})
    return "".join(text), calls


class GeminiAdapter:
    def __init__(self, provider: Provider):
        self.provider = provider
        self.upstream = Upstream(provider, {"x-goog-api-key": provider.api_key} if provider.api_key else {},
                                 error_field)

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post(f"/models/{model.upstream}:generateContent", to_gemini(body))
        document = msgspec.json.decode(response.content)
        choices = []
        for n, candidate in enumerate(document.get("candidates") or []):
            text, calls = _choice(candidate)
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            finish = "tool_calls" if calls else FINISH.get(candidate.get("finishReason"), "stop")
            choices.append({"index": candidate.get("index", n), "message": message, "finish_reason": finish})
        usage = _usage(document.get("usageMetadata")) or Usage(
            estimate_tokens(message_text(body["messages"])),
            estimate_tokens("".join((c["message"]["content"] or "") for c in choices)), True)
        out = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
               "model": model.id, "choices": choices,
               "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                         "total_tokens": usage.prompt_tokens + usage.completion_tokens}}
        return Reply(msgspec.json.encode(out), usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        response = await self.upstream.stream(f"/models/{model.upstream}:streamGenerateContent", to_gemini(body),
                                              params={"alt": "sse"})
        prompt_text = message_text(body.get("messages") or [])
        reply: StreamReply

        async def frames() -> AsyncIterator[bytes]:
            base = {"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion.chunk",
                    "created": int(time.time()), "model": model.id}
            usage: Usage | None = None
            generated: list[str] = []
            started_roles: set[int] = set()
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    chunk = msgspec.json.decode(line[5:].strip())
                    usage = _usage(chunk.get("usageMetadata")) or usage
                    for n, candidate in enumerate(chunk.get("candidates") or []):
                        index = candidate.get("index", n)
                        text, calls = _choice(candidate)
                        delta: dict[str, Any] = {}
                        if index not in started_roles:
                            started_roles.add(index)
                            delta["role"] = "assistant"
                        if text:
                            reply.mark_first_token()
                            generated.append(text)
                            delta["content"] = text
                        if calls:
                            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
                        finish = candidate.get("finishReason")
                        yield sse(msgspec.json.encode({**base, "choices": [{
                            "index": index, "delta": delta,
                            "finish_reason": ("tool_calls" if calls else FINISH.get(finish, "stop")) if finish else None}]}))
                reply.usage = usage or Usage(estimate_tokens(prompt_text), estimate_tokens("".join(generated)), True)
                if include_usage:
                    yield usage_chunk(base, reply.usage)
                yield SSE_DONE
            finally:
                if usage is None:
                    reply.usage = Usage(estimate_tokens(prompt_text), estimate_tokens("".join(generated)), True)
                reply.mark_done()
                await response.aclose()

        reply = StreamReply(frames())
        return reply

    async def aclose(self) -> None:
        await self.upstream.aclose()
