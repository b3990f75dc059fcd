"""A fake Anthropic Messages API (POST /v1/messages) speaking its documented wire format.

Non-stream: a `message` with content blocks and usage {input_tokens, output_tokens}. Stream: SSE with
`event: <type>` and `data: <json>` lines, in Anthropic's order: message_start, content_block_start, ping,
content_block_delta…, content_block_stop, message_delta (stop_reason, usage.output_tokens), message_stop.
Errors: {"type": "error", "error": {"type", "message"}}. It answers with `tool_use` when tools are offered and
the last user turn mentions "weather". Token counts are words, so tests can compute them.
"""

from __future__ import annotations

import json
import uuid


def _words(content) -> int:
    if isinstance(content, str):
        return len(content.split())
    return sum(len(b.get("text", "").split()) if b.get("type") == "text" else
               len(str(b.get("content", "")).split()) if b.get("type") == "tool_result" else 0 for b in content)


class FakeAnthropic:
    def __init__(self, reply_words: int = 6, api_key: str | None = None):
        self.reply_words = reply_words
        self.api_key = api_key
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.fail_with: tuple[int, str, str] | None = None  # (status, error type, message)

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
            return await self._json(send, 401, {"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}})
        if scope["path"] != "/v1/messages" or "anthropic-version" not in headers:
            return await self._json(send, 400, {"type": "error", "error": {
                "type": "invalid_request_error", "message": "bad path or missing anthropic-version"}})
        request = json.loads(body)
        self.requests.append(request)
        if self.fail_with:
            status, kind, text = self.fail_with
            return await self._json(send, status, {"type": "error", "error": {"type": kind, "message": text}})
        input_tokens = _words(request.get("system", "")) + sum(_words(m["content"]) for m in request["messages"])
        last = request["messages"][-1]
        wants_tool = request.get("tools") and "weather" in json.dumps(last["content"])
        if wants_tool:
            blocks = [{"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:12], "name": request["tools"][0]["name"],
                       "input": {"city": "Paris"}}]
            stop_reason, output_tokens = "tool_use", 5
        else:
            n = min(self.reply_words, request["max_tokens"])
            text = " ".join(f"a{i}" for i in range(n))
            blocks = [{"type": "text", "text": text}]
            stop_reason, output_tokens = ("max_tokens" if n < self.reply_words else "end_turn"), n
        message = {"id": "msg_" + uuid.uuid4().hex[:12], "type": "message", "role": "assistant",
                   "model": request["model"], "content": blocks, "stop_reason": stop_reason, "stop_sequence": None,
                   "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}}
        if not request.get("stream"):
            return await self._json(send, 200, message)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})

        async def event(kind: str, data: dict) -> None:
            payload = f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()
            await send({"type": "http.response.body", "body": payload, "more_body": True})

        await event("message_start", {"message": {**message, "content": [], "stop_reason": None,
                                                   "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
        block = blocks[0]
        if block["type"] == "text":
            await event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            await event("ping", {})
            for i, word in enumerate(block["text"].split()):
                await event("content_block_delta", {"index": 0, "delta": {
                    "type": "text_delta", "text": word if i == 0 else " " + word}})
        else:
            await event("content_block_start", {"index": 0, "content_block": {**block, "input": {}}})
            await event("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                       "partial_json": '{"city": '}})
            await event("content_block_delta", {"index": 0, "delta": {"type": "input_json_delta",
                                                                       "partial_json": '"Paris"}'}})
        await event("content_block_stop", {"index": 0})
        await event("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                      "usage": {"output_tokens": output_tokens}})
        await event("message_stop", {})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _json(send, status: int, document: dict) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(document).encode()})
