"""The Anthropic and Gemini adapters (and the OpenAI one where a case is its own) against fakes that speak each
provider's wire format over real HTTP.

Every reply body and stream frame the adapters produce is parsed with the official openai SDK's types.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from domain.pricing import Price
from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import Usage
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai import OpenAIAdapter
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import SIGNATURE, FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import BackgroundServer

CLAUDE = Model("claude/test", "claude", "claude-test-1", Price.from_usd("3", "15"))
GEMINI = Model("google/flash", "google", "gemini-test", Price.from_usd("0.1", "0.4"))
UPSTREAM_DELAY = 0.2  # seconds a fake waits before its response's headers, where it should
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@dataclass
class Side:
    """One provider under test: its fake, an adapter pointed at it, and what the fake answers."""

    kind: str
    fake: FakeAnthropic | FakeGemini
    url: str
    model: Model
    words: list[str]  # the fake's reply, word by word

    def adapter(self, timeout: float = 5.0) -> AnthropicAdapter | GeminiAdapter:
        if self.kind == "anthropic":
            return AnthropicAdapter(Provider("claude", "anthropic", self.url + "/v1", "sk-ant-test", 2.0, timeout))
        return GeminiAdapter(Provider("google", "gemini", self.url + "/v1beta", "g-key", 2.0, timeout))

    @property
    def sent(self) -> dict:
        return self.fake.requests[-1]


@pytest.fixture(scope="module")
def servers():
    claude, gemini = FakeAnthropic(reply_words=6, api_key="sk-ant-test"), FakeGemini(reply_words=5, api_key="g-key")
    with BackgroundServer(claude) as claude_server, BackgroundServer(gemini) as gemini_server:
        yield {
            "anthropic": Side("anthropic", claude, claude_server.url, CLAUDE, [f"a{i}" for i in range(6)]),
            "gemini": Side("gemini", gemini, gemini_server.url, GEMINI, [f"g{i}" for i in range(5)]),
        }


def _reset(side: Side) -> Side:
    side.fake.fail_with, side.fake.delay, side.fake.chunk_delay = None, 0.0, 0.0
    if isinstance(side.fake, FakeAnthropic):
        side.fake.fail_mid_stream = None
    return side


@pytest.fixture(params=["anthropic", "gemini"])
def side(request, servers) -> Side:
    return _reset(servers[request.param])


@pytest.fixture
def claude(servers) -> Side:
    return _reset(servers["anthropic"])


@pytest.fixture
def gemini(servers) -> Side:
    return _reset(servers["gemini"])


@pytest.fixture
async def adapter(request, servers):
    """An adapter for whichever side the test uses."""
    name = next(n for n in ("side", "claude", "gemini") if n in request.fixturenames)
    adapter = request.getfixturevalue(name).adapter()
    yield adapter
    await adapter.aclose()


async def chat(adapter, model: Model, body: dict) -> tuple[ChatCompletion, Usage]:
    reply = await adapter.chat(model, body)
    return ChatCompletion.model_validate_json(reply.body), reply.usage


async def collect(reply) -> list[dict]:
    """The stream's chunks, each checked against the SDK's chunk type; the stream must end with [DONE]."""
    frames = [frame async for frame in reply]
    assert frames[-1] == b"data: [DONE]\n\n" and all(f.startswith(b"data: ") and f.endswith(b"\n\n") for f in frames)
    for frame in frames[:-1]:
        ChatCompletionChunk.model_validate_json(frame[6:])
    return [json.loads(frame[6:]) for frame in frames[:-1]]


def streamed_text(chunks: list[dict]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def usage_of(side: Side, prompt: str) -> Usage:
    """What the fake bills: a word is a token; the reply is the fake's words."""
    return Usage(len(prompt.split()), len(side.words))


# --- request and response translation -------------------------------------------------------------------------


async def test_anthropic_request_and_response(claude, adapter):
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "use metric units"},
            {"role": "user", "content": "hello there"},
            {"role": "assistant", "content": "hi"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            },
            {"role": "user", "content": "please"},
        ],
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "max_completion_tokens": 100,
    }
    completion, usage = await chat(adapter, CLAUDE, body)
    sent = claude.sent
    assert sent["system"] == "be brief\n\nuse metric units" and sent["model"] == "claude-test-1"
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]  # the two user turns merged
    assert sent["messages"][2]["content"] == [
        {"type": "text", "text": "and this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "please"},
    ]
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (100, 0.2, 0.9)
    assert sent["metadata"] == {"user_id": "u-1"} and "stop_sequences" not in sent
    assert claude.fake.headers[-1]["anthropic-version"] == "2023-06-01"
    assert claude.fake.headers[-1]["x-api-key"] == "sk-ant-test"
    assert completion.model == "claude/test" and completion.object == "chat.completion"
    assert completion.choices[0].message.content == "a0 a1 a2 a3 a4 a5"
    assert completion.choices[0].finish_reason == "stop"
    assert usage == Usage(11, 6) and completion.usage.total_tokens == 17  # 2 + 3 + 2 + 1 + 2 + 1 words in, 6 out
    await adapter.chat(CLAUDE, {"messages": [{"role": "user", "content": "x"}]})
    assert claude.sent["max_tokens"] == CLAUDE.max_output_tokens  # required there: the model's maximum if unset


async def test_gemini_request_and_response(gemini, adapter):
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "additionalProperties": False}
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look at this"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}},
                ],
            },
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "and?"},
        ],
        "max_tokens": 50,
        "temperature": 0.5,
        "top_p": 0.8,
        "n": 2,
        "seed": 7,
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    completion, usage = await chat(adapter, GEMINI, body)
    sent = gemini.sent
    assert sent["_model"] == "gemini-test" and sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert [c["role"] for c in sent["contents"]] == ["user", "model", "user"]
    assert sent["contents"][0]["parts"] == [
        {"text": "look at this"},
        {"inlineData": {"mimeType": "image/jpeg", "data": "BBBB"}},
    ]
    assert sent["generationConfig"] == {
        "maxOutputTokens": 50,
        "temperature": 0.5,
        "topP": 0.8,
        "candidateCount": 2,
        "seed": 7,
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }
    assert completion.model == "google/flash" and [c.index for c in completion.choices] == [0, 1]
    assert all(c.message.content == "g0 g1 g2 g3 g4" and c.finish_reason == "stop" for c in completion.choices)
    assert usage == Usage(7, 10)  # 2 + 3 + 1 + 1 words in; 5 words in each of 2 candidates
    await adapter.chat(
        GEMINI, {"messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_object"}}
    )
    assert gemini.sent["generationConfig"] == {"responseMimeType": "application/json"}


async def test_stop_sequences_end_the_reply(side, adapter):
    stop = side.words[3]
    completion, usage = await chat(
        adapter, side.model, {"messages": [{"role": "user", "content": "count"}], "stop": [stop, "never"]}
    )
    sent = side.sent["stop_sequences"] if side.kind == "anthropic" else side.sent["generationConfig"]["stopSequences"]
    assert sent == [stop, "never"]
    assert completion.choices[0].message.content == " ".join(side.words[:3])
    assert completion.choices[0].finish_reason == "stop" and usage.completion_tokens == 3
    completion, _ = await chat(adapter, side.model, {"messages": [{"role": "user", "content": "count"}], "stop": stop})
    assert completion.choices[0].message.content == " ".join(side.words[:3])  # a single string works too


async def test_max_tokens_reached_is_length(side, adapter):
    completion, usage = await chat(
        adapter, side.model, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    )
    assert completion.choices[0].finish_reason == "length" and usage.completion_tokens == 2


# --- streaming ------------------------------------------------------------------------------------------------


async def test_a_stream_says_what_the_plain_reply_says(side, adapter):
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "tell me something"}]}
    completion, plain = await chat(adapter, side.model, body)
    reply = await adapter.chat_stream(side.model, body, include_usage=True)
    chunks = await collect(reply)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(chunks) == completion.choices[0].message.content == " ".join(side.words)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    assert {c["model"] for c in chunks} == {side.model.id} and len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": len(side.words),
        "total_tokens": 5 + len(side.words),
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert reply.usage == plain == usage_of(side, "be brief tell me something") and not reply.usage.estimated
    assert reply.sent_ns < reply.first_token_ns <= reply.sent_ns + reply.upstream_us * 1000


async def test_the_upstreams_wait_for_its_headers_counts_in_its_time_and_the_first_tokens(side, adapter):
    side.fake.delay = UPSTREAM_DELAY  # before the response's headers
    sent = time.perf_counter_ns()
    reply = await adapter.chat_stream(side.model, {"messages": [{"role": "user", "content": "hi"}]}, True)
    await collect(reply)
    assert reply.upstream_us >= UPSTREAM_DELAY * 1_000_000
    assert reply.first_token_ns - sent >= UPSTREAM_DELAY * 1_000_000_000


async def test_the_usage_chunk_comes_only_when_asked_for(side, adapter):
    body = {"messages": [{"role": "user", "content": "say something"}]}
    reply = await adapter.chat_stream(side.model, body, include_usage=False)
    chunks = await collect(reply)
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert reply.usage == usage_of(side, "say something")  # billed all the same


async def test_a_stream_the_client_leaves_is_billed_from_an_estimate(side, adapter):
    reply = await adapter.chat_stream(side.model, {"messages": [{"role": "user", "content": "say something"}]}, True)
    async for frame in reply:
        if b'"content":"' + side.words[0].encode() in frame:
            break
    await reply.aclose()
    assert reply.usage.estimated and reply.usage.completion_tokens == 1  # "a0" / "g0" is about one token


# --- tools ----------------------------------------------------------------------------------------------------


async def test_anthropic_tool_calls_round_trip(claude, adapter):
    body = {
        "messages": [{"role": "user", "content": "what is the weather in Paris and Rome"}],
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    completion, usage = await chat(adapter, CLAUDE, body)
    assert claude.sent["tools"] == [
        {"name": "get_weather", "description": "weather in a city", "input_schema": WEATHER["function"]["parameters"]}
    ]
    assert claude.sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    choice = completion.choices[0]
    call = choice.message.tool_calls[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None and usage == Usage(8, 5)
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    rome = {"id": "toolu_rome", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}
    follow_up = [
        *body["messages"],
        {"role": "assistant", "content": "Looking.", "tool_calls": [call.model_dump(), rome]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_rome", "content": [{"type": "text", "text": "rainy"}]},
    ]
    completion, _ = await chat(adapter, CLAUDE, {"messages": follow_up, "tools": [WEATHER]})
    sent = claude.sent["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_rome", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    assert sent[2] == {
        "role": "user",
        "content": [  # consecutive tool messages: one user turn
            {"type": "tool_result", "tool_use_id": call.id, "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_rome", "content": "rainy"},
        ],
    }
    assert completion.choices[0].message.content == "a0 a1 a2 a3 a4 a5"
    for choice, expected in (
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ):
        await adapter.chat(CLAUDE, {**body, "tool_choice": choice, "parallel_tool_calls": True})
        assert claude.sent["tool_choice"] == expected


async def test_anthropic_tool_calls_stream(claude, adapter):
    body = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER]}
    reply = await adapter.chat_stream(CLAUDE, body, include_usage=True)
    chunks = await collect(reply)
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["index"] == 0 and calls[0]["id"].startswith("toolu_")
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert all(c["index"] == 0 and "id" not in c for c in calls[1:])
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert reply.usage == Usage(3, 5) == (await adapter.chat(CLAUDE, body)).usage


async def test_gemini_tool_calls_round_trip(gemini, adapter):
    body = {
        "messages": [{"role": "user", "content": "weather in Paris?"}],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    completion, usage = await chat(adapter, GEMINI, body)
    assert gemini.sent["tools"] == [
        {
            "functionDeclarations": [
                {  # JSON Schema as sent: `parameters` would refuse it
                    "name": "get_weather",
                    "description": "weather in a city",
                    "parametersJsonSchema": WEATHER["function"]["parameters"],
                }
            ]
        }
    ]
    assert gemini.sent["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    choice = completion.choices[0]
    call = choice.message.tool_calls[0]
    assert choice.finish_reason == "tool_calls" and usage == Usage(3, 4)
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.model_dump()["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    follow_up = [
        *body["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'},
    ]
    completion, _ = await chat(adapter, GEMINI, {"messages": follow_up, "tools": [WEATHER]})
    sent = gemini.sent["contents"]
    assert sent[1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}],
    }
    assert sent[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
    }
    assert completion.choices[0].message.content == "g0 g1 g2 g3 g4"
    unsigned = {**call.model_dump(), "extra_content": None}
    with pytest.raises(GatewayError) as info:  # what Gemini 3 does to a call replayed without its signature
        await adapter.chat(
            GEMINI, {"messages": [*follow_up[:1], {"role": "assistant", "tool_calls": [unsigned]}, follow_up[2]]}
        )
    assert (info.value.status, info.value.code) == (400, "upstream_rejected")
    for choice, mode in (("auto", "AUTO"), ("required", "ANY"), ("none", "NONE")):
        await adapter.chat(GEMINI, {**body, "tool_choice": choice})
        assert gemini.sent["toolConfig"] == {"functionCallingConfig": {"mode": mode}}


async def test_gemini_tool_calls_stream(gemini, adapter):
    body = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [WEATHER]}
    reply = await adapter.chat_stream(GEMINI, body, include_usage=False)
    chunks = await collect(reply)
    calls = [call for c in chunks for call in c["choices"][0]["delta"].get("tool_calls") or []]
    assert len(calls) == 1 and calls[0]["index"] == 0 and calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert calls[0]["extra_content"] == {"google": {"thought_signature": SIGNATURE}}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert reply.usage == Usage(3, 4) == (await adapter.chat(GEMINI, body)).usage


# --- failures -------------------------------------------------------------------------------------------------

FAILURES = {  # (HTTP status, the provider's error type or status) -> (our status, our code)
    "anthropic": [
        (400, "invalid_request_error", 400, "upstream_rejected"),
        (429, "rate_limit_error", 429, "upstream_rate_limited"),
        (500, "api_error", 502, "upstream_error"),
        (529, "overloaded_error", 502, "upstream_error"),
    ],
    "gemini": [
        (400, "INVALID_ARGUMENT", 400, "upstream_rejected"),
        (429, "RESOURCE_EXHAUSTED", 429, "upstream_rate_limited"),
        (500, "INTERNAL", 502, "upstream_error"),
        (503, "UNAVAILABLE", 502, "upstream_error"),
    ],
}


@pytest.mark.parametrize("case", range(4))
async def test_upstream_errors_are_mapped(side, adapter, case):
    status, kind, mapped, code = FAILURES[side.kind][case]
    side.fake.fail_with = (status, kind, "quota says no")
    body = {"messages": [{"role": "user", "content": "x"}]}
    for call in (adapter.chat(side.model, body), adapter.chat_stream(side.model, body, True)):
        with pytest.raises(GatewayError) as info:
            await call
        assert (info.value.status, info.value.code) == (mapped, code)
        assert side.model.provider in info.value.message
        # the client's own mistakes keep the provider's text; its rate limits and failures are the operator's
        # (the server log has them)
        assert info.value.message.endswith("quota says no") == (status == 400), info.value.message


async def test_an_upstream_slower_than_the_timeout_is_a_504(side):
    adapter = side.adapter(timeout=0.2)
    body = {"messages": [{"role": "user", "content": "say something"}]}
    try:
        side.fake.delay = 0.6
        for call in (adapter.chat(side.model, body), adapter.chat_stream(side.model, body, True)):
            with pytest.raises(GatewayError) as info:
                await call
            assert (info.value.status, info.value.code) == (504, "upstream_timeout")
        side.fake.delay, side.fake.chunk_delay = 0.0, 0.6  # stalls after the first event: the stream times out
        reply = await adapter.chat_stream(side.model, body, True)
        with pytest.raises(GatewayError) as info:
            await collect(reply)
        assert (info.value.status, info.value.code) == (504, "upstream_timeout")
        assert reply.usage.estimated and reply.usage.prompt_tokens == 2  # the prompt count had arrived
    finally:
        side.fake.delay = side.fake.chunk_delay = 0.0  # let the abandoned stream finish quickly
        await adapter.aclose()


async def test_an_anthropic_error_event_fails_the_stream(claude, adapter):
    claude.fake.fail_mid_stream = "Overloaded"
    reply = await adapter.chat_stream(CLAUDE, {"messages": [{"role": "user", "content": "say something"}]}, True)
    frames = []
    with pytest.raises(GatewayError) as info:
        async for frame in reply:
            frames.append(frame)
    assert (info.value.status, info.value.code) == (502, "upstream_error") and "mid-stream" in info.value.message
    assert "Overloaded" not in info.value.message  # the provider's text goes to the server log only
    assert b'"content":"a0"' in frames[-1] and b"[DONE]" not in b"".join(frames)
    assert reply.usage == Usage(2, 1, True)  # input tokens from message_start, the output estimated


async def test_an_openai_error_chunk_fails_the_stream_without_its_text():
    """OpenAI (and vLLM) report a failure after the stream began as a `data: {"error": ...}` chunk: the client gets
    Mesh's message, never the provider's text, and the words that did arrive are billed as an estimate."""
    fake = FakeOpenAI(reply_words=5)
    fake.fail_mid_stream = "org-operator's quota of 10,000 tokens per minute exceeded"
    model = Model("acme/test", "acme", "gpt-test", Price.from_usd("1", "2"))
    with BackgroundServer(fake) as server:
        adapter = OpenAIAdapter(Provider("acme", "openai-compatible", server.url + "/v1"))
        reply = await adapter.chat_stream(model, {"messages": [{"role": "user", "content": "say something"}]}, True)
        frames = []
        with pytest.raises(GatewayError) as info:
            async for frame in reply:
                frames.append(frame)
        await adapter.aclose()
    assert (info.value.status, info.value.code) == (502, "upstream_error") and "mid-stream" in info.value.message
    assert "quota" not in info.value.message and b"quota" not in b"".join(frames)
    assert b'"w0"' in b"".join(frames) and b"[DONE]" not in b"".join(frames)
    assert reply.usage.estimated and reply.usage.completion_tokens >= 1
