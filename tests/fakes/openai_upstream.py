"""A fake OpenAI-compatible upstream speaking the real wire format of POST /v1/chat/completions (and GET /v1/models).

Non-stream: a `chat.completion` with `usage`. Stream: `chat.completion.chunk` SSE frames
(`data: {...}\\n\\n`), a usage chunk with empty `choices` only when
`stream_options.include_usage` is true, then `data: [DONE]`. Errors use OpenAI's
error body. The reply and its token counts are deterministic so tests can
compute the exact cost: prompt tokens = words in all messages, completion
tokens = words in the reply (the reply is `reply_words` words long, fewer when
max_completion_tokens or max_tokens is lower). Like OpenAI, it refuses `max_tokens`
for the gpt-5 family and the o-series (400 unsupported_parameter).

Usage carries OpenAI's breakdown as it does: `prompt_tokens_details.cached_tokens` (part of prompt_tokens: the
first `cached_tokens` prompt tokens, as if cached) and `completion_tokens_details.reasoning_tokens` (part of
completion_tokens: `reasoning_tokens` more tokens spent thinking, never shown).

Tools: when function tools are offered and the last message is the user's and mentions "weather", the answer is a
call of the first tool with arguments {"city": "Paris"} (finish_reason tool_calls, 5 completion tokens), streamed
as a tool_calls delta with the id and name and then the arguments in two fragments.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Sequence

# OpenAI's reasoning models take only max_completion_tokens
REFUSES_MAX_TOKENS = re.compile(r"^(gpt-5|o\d)")


def count_words(messages: list) -> int:
    total = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            total += len(content.split())
        elif isinstance(content, list):
            total += sum(len(p.get("text", "").split()) for p in content if p.get("type") == "text")
    return total


TOOL_CALL_TOKENS = 5  # completion tokens of a tool call answer


def _tool_call(request: dict) -> dict | None:
    """The call of the first function tool, when the last message is the user's and asks about the weather."""
    tools = [t for t in request.get("tools") or [] if t.get("type") == "function"]
    last = request["messages"][-1] if request.get("messages") else {}
    content = last.get("content")
    text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content or [])
    if not tools or last.get("role") != "user" or "weather" not in text:
        return None
    name = tools[0]["function"]["name"]
    return {
        "id": "call_" + uuid.uuid4().hex[:24],
        "type": "function",
        "function": {"name": name, "arguments": '{"city": "Paris"}'},
    }


class FakeOpenAI:
    def __init__(self, reply_words: int = 7, api_key: str | None = None):
        self.reply_words = reply_words
        self.api_key = api_key
        self.requests: list[dict] = []
        self.request_headers: list[dict[bytes, bytes]] = []  # each request's headers, beside `requests`
        self.fail_with: tuple[int, str] | None = None  # (status, message) to answer the next requests with
        self.fail_times: int | None = None  # how many chat requests fail_with answers (None: all, until cleared)
        self.fail_headers: list[tuple[bytes, bytes]] = []  # the headers of those answers (say, Retry-After)
        self.delay = 0.0  # seconds before answering
        self.chunk_delay = 0.0  # seconds between stream chunks
        self.streams_cut_short = 0  # streams whose reader went away before the end
        self.cached_tokens = 0  # prompt tokens reported as read from the prompt cache
        self.reasoning_tokens = 0  # completion tokens reported as reasoning (on top of the reply's words)
        self.fail_mid_stream: str | None = None  # a `{"error": ...}` chunk with this message after the first word
        self.models = ["gpt-test", "gpt-free", "gpt-4o-mini"]  # what GET /v1/models lists

    def reply_for(self, body: dict) -> str:
        n = body.get("max_completion_tokens") or body.get("max_tokens") or self.reply_words
        return " ".join(f"w{i}" for i in range(min(n, self.reply_words)))

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        if self.api_key and headers.get(b"authorization") != f"Bearer {self.api_key}".encode():
            return await self._json(
                send,
                401,
                {
                    "error": {
                        "message": "Incorrect API key provided",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        if scope["path"] == "/v1/models" and scope["method"] == "GET":  # OpenAI's list: one page, no limits
            if self.fail_with:
                status, text = self.fail_with
                return await self._json(send, status, {"error": {"message": text, "type": "server_error"}})
            data = [{"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "system"} for m in self.models]
            return await self._json(send, 200, {"object": "list", "data": data})
        if scope["path"] not in ("/v1/chat/completions", "/v1/embeddings"):
            return await self._json(send, 404, {"error": {"message": "Unknown URL", "type": "invalid_request_error"}})
        request = json.loads(body)
        self.requests.append(request)
        self.request_headers.append(headers)
        if self.delay:
            await asyncio.sleep(self.delay)
        if scope["path"] == "/v1/embeddings":
            inputs = request["input"] if isinstance(request["input"], list) else [request["input"]]
            tokens = sum(len(str(i).split()) for i in inputs)
            return await self._json(
                send,
                200,
                {
                    "object": "list",
                    "model": request["model"],
                    "data": [
                        {"object": "embedding", "index": n, "embedding": [0.1, 0.2, 0.3]} for n in range(len(inputs))
                    ],
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                },
            )
        if "max_tokens" in request and REFUSES_MAX_TOKENS.match(str(request.get("model"))):
            return await self._json(
                send,
                400,
                {
                    "error": {
                        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                        "Use 'max_completion_tokens' instead.",
                        "type": "invalid_request_error",
                        "param": "max_tokens",
                        "code": "unsupported_parameter",
                    }
                },
            )
        if self.fail_with:
            status, text = self.fail_with
            if self.fail_times is not None:
                self.fail_times -= 1
                if self.fail_times <= 0:
                    self.fail_with = self.fail_times = None
            error = {"error": {"message": text, "type": "server_error", "code": None}}
            return await self._json(send, status, error, self.fail_headers)
        call = _tool_call(request)
        text = "" if call else self.reply_for(request)
        prompt = count_words(request["messages"])
        completion = (TOOL_CALL_TOKENS if call else len(text.split())) + self.reasoning_tokens
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": min(self.cached_tokens, prompt), "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "created": int(time.time()),
            "model": request["model"],
            "system_fingerprint": "fp_fake",
        }
        if not request.get("stream"):
            return await self._json(
                send,
                200,
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": None if call else text,
                                "refusal": None,
                                **({"tool_calls": [call]} if call else {}),
                            },
                            "logprobs": None,
                            "finish_reason": "tool_calls" if call else "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream; charset=utf-8")],
            }
        )
        chunk = {**base, "object": "chat.completion.chunk"}
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())

        async def frame(data: dict) -> None:
            if gone.is_set():
                raise ConnectionResetError("reader went away")
            if include_usage:
                data = {**data, "usage": data.get("usage")}
            await send(
                {"type": "http.response.body", "body": f"data: {json.dumps(data)}\n\n".encode(), "more_body": True}
            )
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)

        try:
            await self._stream_frames(frame, chunk, text, usage, include_usage, call)
        except ConnectionResetError:
            self.streams_cut_short += 1
            return
        finally:
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _stream_frames(
        self, frame, chunk: dict, text: str, usage: dict, include_usage: bool, call: dict | None = None
    ) -> None:
        await frame(
            {
                **chunk,
                "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                ],
            }
        )
        if call:
            head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            fragments = [{"index": 0, **head}] + [
                {"index": 0, "function": {"arguments": part}} for part in ('{"city": ', '"Paris"}')
            ]
            for fragment in fragments:
                delta = {"tool_calls": [fragment]}
                await frame(
                    {**chunk, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]}
                )
            await frame(
                {**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]}
            )
            if include_usage:
                await frame({**chunk, "choices": [], "usage": usage})
            return
        for i, word in enumerate(text.split()):
            if i == 1 and self.fail_mid_stream:  # as OpenAI and vLLM report a failure once the stream has begun
                await frame({"error": {"message": self.fail_mid_stream, "type": "server_error", "code": None}})
                return
            await frame(
                {
                    **chunk,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": word if i == 0 else " " + word},
                            "logprobs": None,
                            "finish_reason": None,
                        }
                    ],
                }
            )
        await frame({**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        if include_usage:
            await frame({**chunk, "choices": [], "usage": usage})

    @staticmethod
    async def _json(send, status: int, document: dict, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(document).encode()})
