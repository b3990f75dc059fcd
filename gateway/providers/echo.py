"""The built-in free model `mesh/echo`: answers with the last user message, no upstream needed.

It counts tokens as whitespace-separated words, which is exact for itself.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import AsyncIterator

import msgspec

from gateway.catalog import Model
from gateway.fields import OPENAI_CHAT_FIELDS, OPENAI_EMBEDDINGS_FIELDS
from gateway.providers.base import SSE_DONE, Reply, StreamReply, Usage, message_text, sse
from gateway.providers.streams import usage_chunk


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text([message])
    return ""


def _count(text: str) -> int:
    return len(text.split())


class EchoAdapter:
    chat_fields = OPENAI_CHAT_FIELDS
    embeddings_fields = OPENAI_EMBEDDINGS_FIELDS

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        messages = body["messages"]
        text = _last_user_text(messages)
        usage = Usage(_count(message_text(messages)), _count(text))
        document = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model.id,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": usage.openai(),
        }
        return Reply(msgspec.json.encode(document), usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        messages = body["messages"]
        text = _last_user_text(messages)
        words = text.split()
        reply: StreamReply

        async def frames() -> AsyncIterator[bytes]:
            base = {
                "id": "chatcmpl-" + uuid.uuid4().hex,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model.id,
            }
            yield sse(
                msgspec.json.encode(
                    {
                        **base,
                        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
                    }
                )
            )
            for i, word in enumerate(words):
                reply.mark_first_token()
                piece = word if i == 0 else " " + word
                reply.usage.completion_tokens += 1
                yield sse(
                    msgspec.json.encode(
                        {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    )
                )
            yield sse(msgspec.json.encode({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
            reply.mark_done()
            if include_usage:
                yield usage_chunk(base, reply.usage, reply.cost())
            yield SSE_DONE

        reply = StreamReply(frames(), time.perf_counter_ns())
        reply.usage.prompt_tokens = _count(message_text(messages))
        return reply

    async def embeddings(self, model: Model, body: dict) -> Reply:
        """Eight numbers derived from each input's hash: deterministic, so tests can check them."""
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, item in enumerate(inputs):
            digest = hashlib.sha256(str(item).encode()).digest()
            data.append(
                {"object": "embedding", "index": index, "embedding": [round(b / 255 - 0.5, 6) for b in digest[:8]]}
            )
        tokens = sum(_count(str(item)) for item in inputs)
        document = {
            "object": "list",
            "data": data,
            "model": model.id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Reply(msgspec.json.encode(document), Usage(tokens, 0), 0)

    async def aclose(self) -> None:
        pass
