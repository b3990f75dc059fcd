"""A fake Gemini API: POST /v1beta/models/{model}:generateContent and :streamGenerateContent?alt=sse.

Responses are GenerateContentResponse JSON (candidates with content.parts, finishReason, usageMetadata with
promptTokenCount / candidatesTokenCount / totalTokenCount); the stream sends one per SSE event as
`data: {...}\\r\\n\\r\\n`, the last carrying finishReason and the final usageMetadata. Errors use Google's shape
{"error": {"code", "message", "status"}}. A functionCall comes back when tools are given and the last user
turn mentions "weather". Tokens are words.
"""

from __future__ import annotations

import json


def _words(parts: list[dict]) -> int:
    return sum(len(p.get("text", "").split()) for p in parts)


class FakeGemini:
    def __init__(self, reply_words: int = 5, api_key: str | None = None):
        self.reply_words = reply_words
        self.api_key = api_key
        self.requests: list[dict] = []
        self.fail_with: tuple[int, str, str] | None = None  # (code, status, message)

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if self.api_key and headers.get("x-goog-api-key") != self.api_key:
            return await self._json(send, 403, {"error": {"code": 403, "message": "API key not valid",
                                                          "status": "PERMISSION_DENIED"}})
        path = scope["path"]
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            return await self._json(send, 404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})
        request = json.loads(body)
        request["_model"] = model
        self.requests.append(request)
        if self.fail_with:
            code, status, text = self.fail_with
            return await self._json(send, code, {"error": {"code": code, "message": text, "status": status}})
        prompt = sum(_words(c["parts"]) for c in request["contents"]) + _words(
            (request.get("systemInstruction") or {}).get("parts", []))
        config = request.get("generationConfig") or {}
        if request.get("tools") and "weather" in json.dumps(request["contents"][-1]):
            name = request["tools"][0]["functionDeclarations"][0]["name"]
            parts, output, finish = [{"functionCall": {"name": name, "args": {"city": "Paris"}}}], 4, "STOP"
        else:
            n = min(self.reply_words, config.get("maxOutputTokens") or self.reply_words)
            parts, output = [{"text": " ".join(f"g{i}" for i in range(n))}], n
            finish = "MAX_TOKENS" if n < self.reply_words else "STOP"
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output}
        if method == "generateContent":
            return await self._json(send, 200, {"candidates": [{"content": {"role": "model", "parts": parts},
                                                                "finishReason": finish, "index": 0}],
                                                "usageMetadata": usage, "modelVersion": model})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        pieces = [{"text": w + " "} for w in parts[0]["text"].split()] if "text" in parts[0] else parts
        if pieces and "text" in pieces[-1]:
            pieces[-1] = {"text": pieces[-1]["text"].rstrip()}
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            chunk = {"candidates": [{"content": {"role": "model", "parts": [piece]}, "index": 0,
                                     **({"finishReason": finish} if last else {})}],
                     "usageMetadata": usage if last else {"promptTokenCount": prompt}, "modelVersion": model}
            await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\r\n\r\n".encode(),
                        "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _json(send, status: int, document: dict) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(document).encode()})
