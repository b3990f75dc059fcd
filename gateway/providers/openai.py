"""OpenAI and any OpenAI-compatible server (vLLM, Ollama, llama.cpp, another gateway)."""

from __future__ import annotations

import time

import msgspec

from gateway.answer_fields import cost_usd, model_name, with_cost, with_model
from gateway.catalog import Model, Provider
from gateway.fields import OPENAI_CHAT_FIELDS, OPENAI_EMBEDDINGS_FIELDS
from gateway.providers.upstream_errors import error_field, failed_mid_stream
from gateway.providers.base import (
    SSE_DONE,
    Reply,
    StreamReply,
    Upstream,
    Usage,
    estimate_tokens,
    estimated_usage,
    sse,
)
from gateway.providers.streams import relayed_stream


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0  # cached tokens included
    completion_tokens: int = 0  # reasoning tokens included
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None

    def counted(self) -> Usage:
        prompt, completion = self.prompt_tokens_details, self.completion_tokens_details
        return Usage(
            self.prompt_tokens,
            self.completion_tokens,
            cached_prompt_tokens=(prompt.cached_tokens or 0) if prompt is not None else 0,
            reasoning_tokens=(completion.reasoning_tokens or 0) if completion is not None else 0,
        )


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None


class _ToolCall(msgspec.Struct):
    function: _Function | None = None


class _Delta(msgspec.Struct):
    """What a message (or a stream delta) generated: its text, refusal, reasoning (as some OpenAI-compatible
    servers send it) and tool calls."""

    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[_ToolCall] | None = None

    def text(self) -> str:
        calls = [f"{c.function.name or ''}{c.function.arguments or ''}" for c in self.tool_calls or [] if c.function]
        return "".join([self.content or "", self.refusal or "", self.reasoning_content or "", *calls])


class _Choice(msgspec.Struct):
    delta: _Delta | None = None
    message: _Delta | None = None


class _Error(msgspec.Struct):
    message: str = "unknown error"


class _Document(msgspec.Struct):
    """Just the parts of a completion (or chunk) the gateway reads for metering, and a stream's error chunk."""

    usage: _Usage | None = None
    choices: list[_Choice] = []
    error: _Error | None = None


_decode_document = msgspec.json.Decoder(_Document).decode


class OpenAIAdapter:
    chat_fields = OPENAI_CHAT_FIELDS
    embeddings_fields = OPENAI_EMBEDDINGS_FIELDS

    def __init__(self, provider: Provider):
        self.provider = provider
        if provider.extra_fields:  # an openai-compatible server's own fields (mesh.toml `extra_fields`)
            self.chat_fields = OPENAI_CHAT_FIELDS | provider.extra_fields
        # OpenAI's own API takes the completion limit as max_completion_tokens on every chat model, and its gpt-5
        # family and o-series refuse max_tokens; other servers get the limit in the field the client used.
        self.renames_max_tokens = provider.kind == "openai"
        auth = {"authorization": f"Bearer {provider.api_key}"} if provider.api_key else {}
        self.upstream = Upstream(provider, auth, error_field)

    async def chat(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post("/chat/completions", self._document(body, model, False))
        try:
            document = _decode_document(response.content)
        except msgspec.DecodeError:
            raise self.upstream.broken("sent a response that is not a chat completion") from None
        usage = self._usage(document, body)
        return Reply(response.content, usage, (time.perf_counter_ns() - started) // 1000)

    async def chat_stream(self, model: Model, body: dict, include_usage: bool) -> StreamReply:
        # Always ask for usage; forward the usage chunk only if the client asked for it.
        document = self._document(body, model, True)
        document["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        sent = time.perf_counter_ns()
        response = await self.upstream.stream("/chat/completions", document)
        generated: list[str] = []
        reported = False
        name = model_name(model.id)

        def frame(line: str, reply: StreamReply) -> bytes | None:
            """What the client gets for one upstream line (None: nothing); SSE_DONE ends the stream."""
            nonlocal reported
            if not line.startswith("data:"):
                return None
            data = line[5:].strip()
            if data == "[DONE]":
                reply.ended = True
                return SSE_DONE
            raw = data.encode()
            try:
                chunk = _decode_document(raw)
            except msgspec.DecodeError:
                return None
            if chunk.error is not None:  # the upstream failed after answering began: its text to the log only
                raise failed_mid_stream(self.provider, chunk.error.message)
            for choice in chunk.choices:
                if choice.delta is not None:
                    text = choice.delta.text()
                    if text:
                        reply.mark_first_token()
                        generated.append(text)
            raw = with_model(raw, name)
            if chunk.usage is not None:
                reported = True
                reply.usage = chunk.usage.counted()
                if not chunk.choices and not include_usage:
                    return None
                cost = reply.cost()
                if cost is not None:
                    raw = with_cost(raw, cost_usd(cost))
            return sse(raw)

        def settle(reply: StreamReply) -> None:
            if not reported:  # no usage (or cut short): bill what was generated, flagged as estimated
                reply.usage = estimated_usage(body, "".join(generated))

        return relayed_stream(self.upstream, response, sent, frame, lambda: SSE_DONE, settle)

    def _document(self, body: dict, model: Model, stream: bool) -> dict:
        document = {**body, "model": model.upstream, "stream": stream}
        if self.renames_max_tokens and "max_tokens" in document:
            limit = document.pop("max_tokens")  # equal to max_completion_tokens when both are given (checked)
            if limit is not None:
                document["max_completion_tokens"] = limit
        return document

    async def embeddings(self, model: Model, body: dict) -> Reply:
        started = time.perf_counter_ns()
        response = await self.upstream.post("/embeddings", {**body, "model": model.upstream})
        try:
            usage = _decode_document(response.content).usage
        except msgspec.DecodeError:
            raise self.upstream.broken("sent a response that is not an embedding list") from None
        counted = (
            Usage(usage.prompt_tokens, 0)
            if usage is not None
            else Usage(estimate_tokens(str(body.get("input", ""))), 0, True, prompt_estimated=True)
        )
        return Reply(response.content, counted, (time.perf_counter_ns() - started) // 1000)

    def _usage(self, document: _Document, body: dict) -> Usage:
        if document.usage is not None:
            return document.usage.counted()
        text = "".join(c.message.text() for c in document.choices if c.message is not None)
        return estimated_usage(body, text)

    async def aclose(self) -> None:
        await self.upstream.aclose()
