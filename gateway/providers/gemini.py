"""Google Gemini (`models/{model}:generateContent`, `:streamGenerateContent?alt=sse`, key in `x-goog-api-key`)
behind the OpenAI shape.

Request: turns → `contents` (roles user/model, consecutive same-role turns merged) with text, inlineData (data:
image URLs) and fileData (other URLs) parts; system/developer messages → `systemInstruction`; `generationConfig`
from max tokens, temperature, top_p, stop, n (candidateCount), seed, presence/frequency penalties and
response_format (JSON mime type, plus `responseJsonSchema` for json_schema); function tools → `functionDeclarations`
with `parametersJsonSchema`; tool_choice → `toolConfig.functionCallingConfig`; assistant tool_calls → functionCall
parts; tool messages → functionResponse parts (named after the call they answer).
Response: candidates → choices (text without thought parts, functionCall → tool_calls), finishReason →
finish_reason, a blocked prompt → content_filter; usageMetadata → usage (tool-use prompt tokens bill as prompt;
cachedContentTokenCount, already part of promptTokenCount, as cached prompt tokens; thoughtsTokenCount, which
candidatesTokenCount leaves out, is added to completion tokens as reasoning). A functionCall's `thoughtSignature`
travels in the tool call as `extra_content.google.thought_signature` (as Google's own OpenAI endpoint does) and goes
back with the call: Gemini 3 refuses a function-calling turn without it.
Stream: each SSE `data:` is a GenerateContentResponse; its parts become deltas, the last usageMetadata is the usage;
a stream with no finishReason broke off and is billed from an estimate (of the whole prompt and everything
generated, thoughts included), flagged as such.
Wire format as documented at ai.google.dev/api/generate-content, /gemini-api/docs/function-calling,
/gemini-api/docs/thought-signatures and /gemini-api/docs/structured-output. The JSON Schema fields
(`parametersJsonSchema`, `responseJsonSchema`) are used because OpenAI clients send JSON Schema, which the older
OpenAPI-subset fields (`parameters`, `responseSchema`) refuse (e.g. `additionalProperties`).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from gateway.catalog import Model, Provider
from gateway.errors import invalid
from gateway.fields import GEMINI_CHAT_FIELDS, content_parts, data_url
from gateway.providers.upstream_errors import error_field, failed_mid_stream
from gateway.providers.base import (
    Reply,
    StreamReply,
    Upstream,
    Usage,
    estimated_usage,
    message_text,
)
from gateway.providers.streams import translated_stream

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
TOOL_MODE = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
BLOCKED = {"finishReason": "SAFETY"}  # the candidate a blocked prompt (promptFeedback.blockReason) stands for


def _parts(content: Any) -> list[dict]:
    return [{"text": value} if kind == "text" else _image(value) for kind, value in content_parts(content, "gemini")]


def _image(url: str) -> dict:
    inline = data_url(url)
    if inline is not None:
        return {"inlineData": {"mimeType": inline[0], "data": inline[1]}}
    return {"fileData": {"fileUri": url}}


def _function_call(call: dict) -> dict:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        args = msgspec.json.decode(arguments) if isinstance(arguments, str) else arguments
    except msgspec.DecodeError:
        raise invalid(
            f"the arguments of tool call {call.get('id')!r} are not JSON", "invalid_tool_call", "messages"
        ) from None
    part: dict[str, Any] = {"functionCall": {"name": function.get("name"), "args": args}}
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if signature:
        part["thoughtSignature"] = signature
    return part


def to_gemini(body: dict) -> dict:
    system: list[dict] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool call id -> function name, for the functionResponse that answers it

    def add(role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:  # parallel calls' responses belong in one turn
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in body["messages"]:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append({"text": message_text([message])})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            names.update((c.get("id"), (c.get("function") or {}).get("name")) for c in calls)
            add("model", _parts(message.get("content")) + [_function_call(c) for c in calls])
        elif role == "tool":
            result = message_text([message])
            try:
                response = msgspec.json.decode(result)
            except msgspec.DecodeError:
                response = None
            add(
                "user",
                [
                    {
                        "functionResponse": {
                            "name": names.get(message.get("tool_call_id"), "tool"),
                            "response": response if isinstance(response, dict) else {"result": result},
                        }
                    }
                ],
            )
        else:
            add("user", _parts(message.get("content")))
    config: dict[str, Any] = {}
    for key, value in (
        ("maxOutputTokens", body.get("max_completion_tokens") or body.get("max_tokens")),
        ("temperature", body.get("temperature")),
        ("topP", body.get("top_p")),
        ("candidateCount", body.get("n")),
        ("seed", body.get("seed")),
        ("presencePenalty", body.get("presence_penalty")),
        ("frequencyPenalty", body.get("frequency_penalty")),
    ):
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
            config["responseJsonSchema"] = schema
    request: dict[str, Any] = {"contents": contents}
    if system:
        request["systemInstruction"] = {"parts": system}
    if config:
        request["generationConfig"] = config
    functions = [t["function"] for t in body.get("tools") or [] if t.get("type") == "function"]
    if functions:
        request["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": f["name"],
                        **({"description": f["description"]} if f.get("description") else {}),
                        **({"parametersJsonSchema": f["parameters"]} if f.get("parameters") else {}),
                    }
                    for f in functions
                ]
            }
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        request["toolConfig"] = {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
        }
    elif choice in TOOL_MODE:
        request["toolConfig"] = {"functionCallingConfig": {"mode": TOOL_MODE[choice]}}
    return request


def _usage(metadata: dict) -> Usage:
    thoughts = metadata.get("thoughtsTokenCount") or 0
    return Usage(
        (metadata.get("promptTokenCount") or 0) + (metadata.get("toolUsePromptTokenCount") or 0),
        (metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached_prompt_tokens=metadata.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


def _candidates(document: dict) -> list[dict]:
    if document.get("candidates"):
        return document["candidates"]
    return [BLOCKED] if (document.get("promptFeedback") or {}).get("blockReason") else []


def _content(candidate: dict) -> tuple[str, list[dict]]:
    """A candidate's answer text (thought summaries left out) and its function calls as OpenAI tool calls."""
    text, calls = [], []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            text.append(part["text"])
        elif "functionCall" in part:
            call = part["functionCall"]
            tool_call: dict[str, Any] = {
                "id": "call_" + uuid.uuid4().hex[:24],
                "type": "function",
                "function": {"name": call["name"], "arguments": msgspec.json.encode(call.get("args") or {}).decode()},
            }
            if part.get("thoughtSignature"):
                tool_call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
            calls.append(tool_call)
    return "".join(text), calls


class GeminiAdapter:
    chat_fields = GEMINI_CHAT_FIELDS

    def __init__(self, provider: Provider):
        self.provider = provider
        self.upstream = Upstream(
            provider, {"x-goog-api-key": provider.api_key} if provider.api_key else {}, error_field
        )

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post(f"/models/{model.upstream}:generateContent", to_gemini(body))
        try:
            document = msgspec.json.decode(response.content)
        except msgspec.DecodeError:
            raise self.upstream.broken("sent a response that is not a GenerateContentResponse") from None
        choices = []
        for n, candidate in enumerate(_candidates(document)):
            text, calls = _content(candidate)
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            finish = "tool_calls" if calls else FINISH.get(candidate.get("finishReason"), "stop")
            choices.append({"index": candidate.get("index", n), "message": message, "finish_reason": finish})
        if document.get("usageMetadata"):
            usage = _usage(document["usageMetadata"])
        else:
            usage = estimated_usage(body, "".join((c["message"]["content"] or "") for c in choices))
        out = {
            "id": "chatcmpl-" + str(document.get("responseId") or uuid.uuid4().hex),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.id,
            "choices": choices,
            "usage": usage.openai(),
        }
        return Reply(msgspec.json.encode(out), usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        sent = time.perf_counter_ns()
        response = await self.upstream.stream(
            f"/models/{model.upstream}:streamGenerateContent", to_gemini(body), params={"alt": "sse"}
        )
        incomplete = "ended the stream before any candidate finished"
        return translated_stream(
            self.upstream, response, sent, model.id, _Chunks(self.provider, body), include_usage, incomplete
        )

    async def aclose(self) -> None:
        await self.upstream.aclose()


class _Chunks:
    """Gemini's streamed GenerateContentResponses as OpenAI chunks (see the module docstring)."""

    stopped = False  # Gemini's stream simply ends

    def __init__(self, provider: Provider, body: dict):
        self.provider, self.body = provider, body
        self.metadata: dict = {}
        self.finished = False  # a finishReason seen: the usage is final
        self.generated: list[str] = []
        self.calls_so_far: dict[int, int] = {}  # choice index -> tool calls sent, so each call gets its own index

    def usage(self) -> Usage:
        reported = _usage(self.metadata)  # cut short: an estimate, flagged
        if self.finished and self.metadata:
            return reported
        return estimated_usage(self.body, "".join(self.generated), reported)

    def read(self, document: dict, reply: StreamReply) -> list[dict]:
        if document.get("error"):
            error = document["error"]
            raise failed_mid_stream(
                self.provider, str(error.get("message", "unknown error") if isinstance(error, dict) else error)
            )
        self.metadata = document.get("usageMetadata") or self.metadata
        choices = []
        for n, candidate in enumerate(_candidates(document)):
            index = candidate.get("index", n)
            text, calls = _content(candidate)
            self.generated.extend(
                p.get("text", "") for p in (candidate.get("content") or {}).get("parts") or [] if p.get("thought")
            )  # thought summaries: not relayed, but billed
            delta: dict[str, Any] = {}
            if index not in self.calls_so_far:
                self.calls_so_far[index] = 0
                delta["role"] = "assistant"
            if text:
                reply.mark_first_token()
                self.generated.append(text)
                delta["content"] = text
            if calls:
                reply.mark_first_token()
                self.generated.extend(c["function"]["arguments"] for c in calls)
                delta["tool_calls"] = [{"index": self.calls_so_far[index] + i, **c} for i, c in enumerate(calls)]
                self.calls_so_far[index] += len(calls)
            finish = None
            if candidate.get("finishReason"):
                self.finished = True
                finish = "tool_calls" if self.calls_so_far[index] else FINISH.get(candidate["finishReason"], "stop")
            choices.append({"index": index, "delta": delta, "finish_reason": finish})
        return choices
