"""A fake Anthropic Messages API (POST /v1/messages; GET /v1/models, paged) speaking its documented wire format.

What it relies on (docs.anthropic.com/en/api/messages, /messages-streaming, /messages-count-tokens, /errors):
- requests carry `x-api-key` and `anthropic-version`; `max_tokens` is required; a `tool_result` must answer a
  `tool_use` of the assistant turn just before it (else 400 invalid_request_error);
- non-stream: a `message` with content blocks, stop_reason (end_turn, max_tokens, stop_sequence, tool_use),
  stop_sequence and usage {input_tokens, cache_creation_input_tokens, cache_read_input_tokens, output_tokens};
  input_tokens leaves out the cache reads and writes; output_tokens includes thinking; a matched stop sequence is
  not part of the text;
- extended thinking (`thinking` set on the fake): a `thinking` block (with a signature) before the answer, whose
  tokens count in output_tokens; streamed as thinking_delta and signature_delta;
- stream: SSE events framed `event: <type>\\ndata: <json>\\n\\n` in the documented order: message_start (empty
  content, usage with input_tokens and output_tokens 1), then per block content_block_start, content_block_delta…
  (text_delta, or input_json_delta with partial_json fragments), content_block_stop, with a ping after the first
  block start; then message_delta (stop_reason, cumulative usage: input, cache and output tokens) and message_stop;
- errors: {"type": "error", "error": {"type", "message"}} with HTTP status (429 rate_limit_error, 529
  overloaded_error, …), and an `event: error` frame when a stream fails after it started.

The reply is deterministic: `reply_words` words "a0 a1 …" (fewer if max_tokens is lower), or a tool_use of the first
tool with {"city": "Paris"} (5 output tokens) when tools are offered and the last user turn mentions "weather".
Input tokens = words in system + message text (tool results included), output tokens = words in the reply (plus
`thinking_tokens`). With `cache_read` / `cache_write` set, that many of the prompt's tokens are reported as read
from / written to the prompt cache (and left out of input_tokens, as Anthropic does).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs
import uuid


def _words(content) -> int:
    if isinstance(content, str):
        return len(content.split())
    return sum(
        len(b.get("text", "").split())
        if b.get("type") == "text"
        else len(str(b.get("content", "")).split())
        if b.get("type") == "tool_result"
        else 0
        for b in content
    )


def _unanswered(messages: list[dict]) -> str | None:
    """A tool_result whose tool_use is not in the assistant turn before it, as the real API refuses it."""
    for n, message in enumerate(messages):
        results = [b for b in message["content"] if isinstance(b, dict) and b.get("type") == "tool_result"]
        previous = messages[n - 1]["content"] if n and messages[n - 1]["role"] == "assistant" else []
        asked = {b.get("id") for b in previous if isinstance(b, dict) and b.get("type") == "tool_use"}
        for result in results:
            if result["tool_use_id"] not in asked:
                return (
                    f"messages.{n}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{result['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                    f"block in the previous message."
                )
    return None


COUNT_TOKENS = "/v1/messages/count_tokens"  # answers {"input_tokens": <words in system and messages>}


class FakeAnthropic:
    def __init__(self, reply_words: int = 6, api_key: str | None = None):
        self.reply_words = reply_words
        self.api_key = api_key
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.queries: list[str] = []  # each request's query string (Claude Code sends ?beta=true)
        self.fail_with: tuple[int, str, str] | None = None  # (status, error type, message)
        self.fail_mid_stream: str | None = None  # an `error` event with this overloaded_error message after a delta
        self.delay = 0.0  # seconds before answering
        self.chunk_delay = 0.0  # seconds between stream events
        self.cache_read = 0  # prompt tokens reported as cache_read_input_tokens
        self.cache_write = 0  # prompt tokens reported as cache_creation_input_tokens
        self.thinking_tokens = 0  # tokens of a thinking block before the answer (counted in output_tokens)
        self.full_delta_usage = True  # message_delta repeats all counts, as the API now does; False: output only
        # GET /v1/models: (id, display_name, max_input_tokens, max_tokens), newest first, at most `models_page` a page
        self.models = [
            ("claude-test", "Claude Test", 200_000, 64_000),
            ("claude-haiku-test", "Claude Haiku Test", 200_000, 8_192),
            ("claude-old", "Claude Old", 100_000, 4_096),
        ]
        self.models_page = 2

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.headers.append(headers)
        if self.api_key and headers.get("x-api-key") != self.api_key:
            return await self._error(send, 401, "authentication_error", "invalid x-api-key")
        if scope["path"] == "/v1/models" and scope["method"] == "GET" and "anthropic-version" in headers:
            return await self._models(send, parse_qs(scope["query_string"].decode()))
        if scope["path"] not in ("/v1/messages", COUNT_TOKENS) or "anthropic-version" not in headers:
            return await self._error(send, 400, "invalid_request_error", "bad path or missing anthropic-version")
        request = json.loads(body)
        self.requests.append(request)
        self.queries.append(scope.get("query_string", b"").decode())
        if scope["path"] == COUNT_TOKENS:
            words = _words(request.get("system", "")) + sum(_words(m["content"]) for m in request["messages"])
            return await self._json(send, 200, {"input_tokens": words})
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with:
            return await self._error(send, *self.fail_with)
        if not isinstance(request.get("max_tokens"), int):
            return await self._error(send, 400, "invalid_request_error", "max_tokens: Field required")
        refusal = _unanswered(request["messages"])
        if refusal:
            return await self._error(send, 400, "invalid_request_error", refusal)
        input_tokens = _words(request.get("system", "")) + sum(_words(m["content"]) for m in request["messages"])
        last = request["messages"][-1]["content"]
        last_text = last if isinstance(last, str) else " ".join(b.get("text", "") for b in last)
        if request.get("tools") and "weather" in last_text:
            blocks = [
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:24],
                    "name": request["tools"][0]["name"],
                    "input": {"city": "Paris"},
                }
            ]
            stop_reason, stop_sequence, output_tokens = "tool_use", None, 5
        else:
            words = [f"a{i}" for i in range(min(self.reply_words, request["max_tokens"]))]
            stop_reason = "max_tokens" if len(words) < self.reply_words else "end_turn"
            stop_sequence = next((w for w in words if w in (request.get("stop_sequences") or [])), None)
            if stop_sequence:
                words, stop_reason = words[: words.index(stop_sequence)], "stop_sequence"
            blocks = [{"type": "text", "text": " ".join(words)}]
            output_tokens = len(words)
        thinking = " ".join(f"t{i}" for i in range(self.thinking_tokens))
        if thinking:
            blocks = [{"type": "thinking", "thinking": thinking, "signature": "c2ln"}, *blocks]
            output_tokens += self.thinking_tokens
        read = min(self.cache_read, input_tokens)
        written = min(self.cache_write, input_tokens - read)
        usage = {
            "input_tokens": input_tokens - read - written,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "output_tokens": output_tokens,
        }
        message = {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": request["model"],
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }
        if not request.get("stream"):
            return await self._json(send, 200, message)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        async def event(kind: str, data: dict) -> None:
            payload = f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            await send({"type": "http.response.body", "body": payload, "more_body": True})
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)

        await event(
            "message_start",
            {
                "message": {
                    **message,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {**usage, "output_tokens": 1},
                }
            },
        )
        index = 0
        if thinking:
            await event(
                "content_block_start",
                {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            )
            for i, word in enumerate(thinking.split()):
                await event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "thinking_delta", "thinking": word if i == 0 else " " + word}},
                )
            await event("content_block_delta", {"index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}})
            await event("content_block_stop", {"index": 0})
            index = 1
        block = blocks[index]
        if block["type"] == "text":
            await event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
            await event("ping", {})
            deltas = [
                {"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(block["text"].split())
            ]
        else:
            await event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
            await event("ping", {})
            deltas = [
                {"type": "input_json_delta", "partial_json": ""},
                {"type": "input_json_delta", "partial_json": '{"city": '},
                {"type": "input_json_delta", "partial_json": '"Paris"}'},
            ]
        for n, delta in enumerate(deltas):
            await event("content_block_delta", {"index": index, "delta": delta})
            if n == 0 and self.fail_mid_stream:
                await event("error", {"error": {"type": "overloaded_error", "message": self.fail_mid_stream}})
                return await send({"type": "http.response.body", "body": b"", "more_body": False})
        await event("content_block_stop", {"index": index})
        await event(
            "message_delta",
            {
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": usage if self.full_delta_usage else {"output_tokens": output_tokens},
            },
        )
        await event("message_stop", {})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _models(self, send, query: dict) -> None:
        """Anthropic's model list: `limit` (1 to 1000, default 20) a page, cursor `after_id`; `has_more`,
        `first_id`, `last_id` (docs.anthropic.com/en/api/models-list)."""
        if self.fail_with:
            return await self._error(send, *self.fail_with)
        limit = min(int(query.get("limit", ["20"])[0]), 1000, self.models_page)
        ids = [m[0] for m in self.models]
        start = ids.index(query["after_id"][0]) + 1 if "after_id" in query else 0
        page = self.models[start : start + limit]
        data = [
            {
                "type": "model",
                "id": model_id,
                "display_name": name,
                "created_at": "2026-01-01T00:00:00Z",
                "max_input_tokens": max_input,
                "max_tokens": max_output,
            }
            for model_id, name, max_input, max_output in page
        ]
        await self._json(
            send,
            200,
            {
                "data": data,
                "has_more": start + limit < len(self.models),
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )

    async def _error(self, send, status: int, kind: str, text: str) -> None:
        await self._json(send, status, {"type": "error", "error": {"type": kind, "message": text}})

    @staticmethod
    async def _json(send, status: int, document: dict) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": json.dumps(document).encode()})
