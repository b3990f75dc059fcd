"""A fake Gemini API: POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse;
GET /v1beta/models (models.list, paged).

What it relies on (ai.google.dev/api/generate-content, /gemini-api/docs/function-calling,
/gemini-api/docs/thought-signatures, Google's error model):
- the key comes in `x-goog-api-key`; a bad key is 403 PERMISSION_DENIED;
- responses are GenerateContentResponse JSON: candidates [{content {role "model", parts}, finishReason, index}],
  usageMetadata {promptTokenCount, candidatesTokenCount, totalTokenCount, and cachedContentTokenCount (part of
  promptTokenCount) when part of the prompt came from a cache, thoughtsTokenCount (not part of
  candidatesTokenCount, part of totalTokenCount) when the model thought}, modelVersion, responseId;
- the stream (alt=sse) sends one GenerateContentResponse per event, framed `data: {...}\\r\\n\\r\\n`, with no
  terminator; the last carries finishReason and the final usageMetadata (earlier ones the prompt count only);
- a functionCall part comes with a `thoughtSignature`, and a request whose current turn replays a functionCall
  without it is refused (400 INVALID_ARGUMENT), as Gemini 3 does;
- `parameters` and `responseSchema` take an OpenAPI subset: JSON Schema's `additionalProperties` there is refused
  with "Invalid JSON payload received. Unknown name ..." (the `...JsonSchema` fields accept it);
- errors are {"error": {"code", "message", "status"}} with the HTTP status equal to `code`.

The reply is deterministic: `reply_words` words "g0 g1 …" per candidate (candidateCount of them, fewer words if
maxOutputTokens is lower, cut before a stop sequence), or a functionCall of the first declared function with
{"city": "Paris"} (4 tokens) when tools are given and the last user turn mentions "weather". Tokens are words.
With `cached_tokens` / `thoughts_tokens` set, that many prompt tokens are reported as cached, and that many
thinking tokens are reported (with a thought-summary part ahead of the answer).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

SIGNATURE = "c2lnbmF0dXJl"  # an opaque thought signature


def _words(parts: list[dict]) -> int:
    return sum(len(p.get("text", "").split()) for p in parts)


def _refusal(request: dict) -> str | None:
    for declaration in (request.get("tools") or [{}])[0].get("functionDeclarations", []):
        if "additionalProperties" in json.dumps(declaration.get("parameters", {})):
            return (
                'Invalid JSON payload received. Unknown name "additionalProperties" at '
                "'tools[0].function_declarations[0].parameters': Cannot find field."
            )
    if "additionalProperties" in json.dumps((request.get("generationConfig") or {}).get("responseSchema", {})):
        return (
            'Invalid JSON payload received. Unknown name "additionalProperties" at '
            "'generation_config.response_schema': Cannot find field."
        )
    current = []  # the turn since the last user text: its function calls need their signatures
    for content in request["contents"]:
        if content["role"] == "user" and any("text" in p for p in content["parts"]):
            current = []
        current.extend(p for p in content["parts"] if "functionCall" in p)
    if any(not p.get("thoughtSignature") for p in current):
        return "Function call is missing a thought_signature in functionCall parts."
    return None


class FakeGemini:
    def __init__(self, reply_words: int = 5, api_key: str | None = None):
        self.reply_words = reply_words
        self.api_key = api_key
        self.requests: list[dict] = []
        self.fail_with: tuple[int, str, str] | None = None  # (code, status, message)
        self.delay = 0.0  # seconds before answering
        self.chunk_delay = 0.0  # seconds between stream events
        self.cached_tokens = 0  # prompt tokens reported as cachedContentTokenCount
        self.thoughts_tokens = 0  # thinking tokens reported as thoughtsTokenCount
        # GET /v1beta/models: (name, displayName, inputTokenLimit, outputTokenLimit), `models_page` a page at most
        self.models = [
            ("gemini-test", "Gemini Test", 1_048_576, 65_536),
            ("gemini-flash-test", "Gemini Flash Test", 1_048_576, 8_192),
            ("text-embedding-test", "Text Embedding Test", 2_048, 1),
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
        if self.api_key and headers.get("x-goog-api-key") != self.api_key:
            return await self._error(send, 403, "PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
        if scope["path"] == "/v1beta/models" and scope["method"] == "GET":
            return await self._models(send, parse_qs(scope["query_string"].decode()))
        model, _, method = scope["path"].removeprefix("/v1beta/models/").partition(":")
        stream = method == "streamGenerateContent" and b"alt=sse" in scope["query_string"]
        if method != "generateContent" and not stream:
            return await self._error(send, 404, "NOT_FOUND", f"{scope['path']} is not found")
        request = json.loads(body)
        request["_model"] = model
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_with:
            return await self._error(send, *self.fail_with)
        refusal = _refusal(request)
        if refusal:
            return await self._error(send, 400, "INVALID_ARGUMENT", refusal)
        prompt = sum(_words(c["parts"]) for c in request["contents"]) + _words(
            (request.get("systemInstruction") or {}).get("parts", [])
        )
        config = request.get("generationConfig") or {}
        count = config.get("candidateCount") or 1
        if request.get("tools") and "weather" in " ".join(p.get("text", "") for p in request["contents"][-1]["parts"]):
            name = request["tools"][0]["functionDeclarations"][0]["name"]
            pieces = [{"functionCall": {"name": name, "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}]
            output, finish = 4, "STOP"
        else:
            words = [f"g{i}" for i in range(min(self.reply_words, config.get("maxOutputTokens") or self.reply_words))]
            finish = "MAX_TOKENS" if len(words) < self.reply_words else "STOP"
            stop = next((w for w in words if w in (config.get("stopSequences") or [])), None)
            if stop:
                words, finish = words[: words.index(stop)], "STOP"
            pieces = [{"text": w if i == 0 else " " + w} for i, w in enumerate(words)]
            output = len(words)
        usage = {
            "promptTokenCount": prompt,
            "candidatesTokenCount": output * count,
            "totalTokenCount": prompt + output * count + self.thoughts_tokens,
        }
        if self.cached_tokens:
            usage["cachedContentTokenCount"] = min(self.cached_tokens, prompt)
        thoughts = []
        if self.thoughts_tokens:
            usage["thoughtsTokenCount"] = self.thoughts_tokens
            thoughts = [{"text": "thinking it over", "thought": True}]  # a thought summary comes first
        if not stream:
            parts = [{"text": "".join(p["text"] for p in pieces)}] if pieces and "text" in pieces[0] else pieces
            parts = thoughts + parts
            return await self._json(
                send,
                200,
                {
                    "candidates": [
                        {"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": n}
                        for n in range(count)
                    ],
                    "usageMetadata": usage,
                    "modelVersion": model,
                    "responseId": "resp-fake",
                },
            )
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        pieces = thoughts + pieces
        for i, piece in enumerate(pieces or [{"text": ""}]):
            last = i == max(len(pieces), 1) - 1
            chunk = {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [piece]},
                        "index": n,
                        **({"finishReason": finish} if last else {}),
                    }
                    for n in range(count)
                ],
                "usageMetadata": usage if last else {"promptTokenCount": prompt, "totalTokenCount": prompt},
                "modelVersion": model,
                "responseId": "resp-fake",
            }
            await send(
                {"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\r\n\r\n".encode(), "more_body": True}
            )
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _models(self, send, query: dict) -> None:
        """models.list: `pageSize` (default 50, at most 1000) a page, `pageToken` from `nextPageToken`
        (ai.google.dev/api/models#method:-models.list)."""
        if self.fail_with:
            return await self._error(send, *self.fail_with)
        size = min(int(query.get("pageSize", ["50"])[0]), 1000, self.models_page)
        start = int(query.get("pageToken", ["0"])[0])
        page = self.models[start : start + size]
        document: dict = {
            "models": [
                {
                    "name": f"models/{name}",
                    "version": "001",
                    "displayName": display,
                    "description": display,
                    "inputTokenLimit": max_input,
                    "outputTokenLimit": max_output,
                    "supportedGenerationMethods": ["embedContent"]
                    if name.startswith("text-embedding")
                    else ["generateContent", "countTokens"],
                }
                for name, display, max_input, max_output in page
            ]
        }
        if start + size < len(self.models):
            document["nextPageToken"] = str(start + size)
        await self._json(send, 200, document)

    async def _error(self, send, code: int, status: str, text: str) -> None:
        await self._json(send, code, {"error": {"code": code, "message": text, "status": status}})

    @staticmethod
    async def _json(send, status: int, document: dict) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": json.dumps(document).encode()})
