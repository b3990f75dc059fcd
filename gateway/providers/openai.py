"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp, another gateway)."""

from __future__ import annotations

import time
from typing import AsyncIterator

import httpx
import msgspec

from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.providers.base import (
    SSE_DONE,
    Reply,
    StreamReply,
    Usage,
    estimate_tokens,
    message_text,
    sse,
    upstream_error,
    upstream_timeout,
    upstream_unreachable,
)


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Delta | None = None


class _Document(msgspec.Struct):
    """Just the parts of a completion (or chunk) the gateway reads for metering."""

    usage: _Usage | None = None
    choices: list[_Choice] = []


_decode_document = msgspec.json.Decoder(_Document).decode


class OpenAIAdapter:
    def __init__(self, provider: Provider):
        self.provider = provider
        headers = {"content-type": "application/json"}
        if provider.api_key:
            headers["authorization"] = f"Bearer {provider.api_key}"
        self.client = httpx.AsyncClient(
            base_url=provider.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(provider.timeout, connect=provider.connect_timeout),
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
        )

    async def _post(self, path: str, document: dict) -> httpx.Response:
        """POST to the upstream; transport failures and error statuses become GatewayErrors."""
        try:
            response = await self.client.post(path, content=msgspec.json.encode(document))
        except httpx.TimeoutException:
            raise upstream_timeout(self.provider) from None
        except httpx.HTTPError as exc:
            raise upstream_unreachable(self.provider, exc) from None
        if response.status_code >= 400:
            raise upstream_error(self.provider, response.status_code, _error_message(response.content))
        return response

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self._post("/chat/completions", {**body, "model": model.upstream, "stream": False})
        try:
            document = _decode_document(response.content)
        except msgspec.DecodeError:
            raise GatewayError(502, f"provider {self.provider.name} sent a response that is not a chat completion",
                               "upstream_error", "bad_upstream_response") from None
        usage = self._usage(document, body)
        return Reply(response.content, usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        # Always ask for usage; forward the usage chunk only if the client asked for it.
        payload = msgspec.json.encode({
            **body, "model": model.upstream, "stream": True,
            "stream_options": {**(body.get("stream_options") or {}), "include_usage": True},
        })
        request = self.client.build_request("POST", "/chat/completions", content=payload)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise upstream_timeout(self.provider) from None
        except httpx.HTTPError as exc:
            raise upstream_unreachable(self.provider, exc) from None
        if response.status_code >= 400:
            content = await response.aread()
            await response.aclose()
            raise upstream_error(self.provider, response.status_code, _error_message(content))
        reply: StreamReply
        prompt_text = message_text(body.get("messages") or [])

        async def frames() -> AsyncIterator[bytes]:
            generated: list[str] = []
            reported = False
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    raw = data.encode()
                    try:
                        chunk = _decode_document(raw)
                    except msgspec.DecodeError:
                        continue
                    for choice in chunk.choices:
                        if choice.delta is not None and choice.delta.content:
                            reply.mark_first_token()
                            generated.append(choice.delta.content)
                    if chunk.usage is not None:
                        reported = True
                        reply.usage = Usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                        if not chunk.choices and not include_usage:
                            continue
                    yield sse(raw)
                yield SSE_DONE
            finally:
                reply.mark_done()
                if not reported:  # no usage (or cut short): bill what was generated, flagged as estimated
                    reply.usage = Usage(estimate_tokens(prompt_text), estimate_tokens("".join(generated)), True)
                await response.aclose()

        reply = StreamReply(frames())
        return reply

    async def embeddings(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self._post("/embeddings", {**body, "model": model.upstream})
        try:
            usage = _decode_document(response.content).usage
        except msgspec.DecodeError:
            raise GatewayError(502, f"provider {self.provider.name} sent a response that is not an embedding list",
                               "upstream_error", "bad_upstream_response") from None
        counted = Usage(usage.prompt_tokens, 0) if usage is not None else Usage(
            estimate_tokens(str(body.get("input", ""))), 0, True)
        return Reply(response.content, counted, (time.perf_counter_ns() - started) // 1000)

    def _usage(self, document: _Document, body: dict) -> Usage:
        if document.usage is not None:
            return Usage(document.usage.prompt_tokens, document.usage.completion_tokens)
        text = "".join((c.message.content or "") for c in document.choices if c.message is not None)
        return Usage(estimate_tokens(message_text(body.get("messages") or [])), estimate_tokens(text), True)

    async def aclose(self) -> None:
        await self.client.aclose()


def _error_message(content: bytes) -> str:
    try:
        document = msgspec.json.decode(content)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
    except msgspec.DecodeError:
        pass
    return content[:200].decode(errors="replace") or "no details"
