"""The Anthropic adapter against a fake that speaks the Messages API's wire format (SSE included)."""

from __future__ import annotations

import json

import msgspec
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from domain.pricing import Price
from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.providers.anthropic import AnthropicAdapter
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.server import BackgroundServer

MODEL = Model("claude/test", "claude", "claude-test-1", Price.from_usd("3", "15"))
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def fake():
    upstream = FakeAnthropic(reply_words=6, api_key="sk-ant-test")
    with BackgroundServer(upstream) as server:
        upstream.url = server.url
        yield upstream


@pytest.fixture
async def adapter(fake):
    fake.fail_with = None
    a = AnthropicAdapter(Provider("claude", "anthropic", fake.url + "/v1", "sk-ant-test", 2.0, 5.0))
    yield a
    await a.aclose()


async def collect(reply) -> list[dict]:
    chunks = []
    async for frame in reply:
        data = frame.decode().removeprefix("data: ").strip()
        if data != "[DONE]":
            ChatCompletionChunk.model_validate_json(data)  # the official SDK's type accepts it
            chunks.append(json.loads(data))
    return chunks


async def test_a_chat_is_translated_both_ways(adapter, fake):
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"},
                         {"role": "assistant", "content": "hi"}, {"role": "user", "content": [
                             {"type": "text", "text": "and this"},
                             {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
            "stop": "END", "temperature": 0.2, "user": "u-1", "max_tokens": 100}
    reply = await adapter.chat(MODEL, body)
    sent = fake.requests[-1]
    assert sent["system"] == "be brief" and sent["model"] == "claude-test-1" and sent["max_tokens"] == 100
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][2]["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert sent["stop_sequences"] == ["END"] and sent["metadata"] == {"user_id": "u-1"}
    assert fake.headers[-1]["anthropic-version"] == "2023-06-01"
    completion = ChatCompletion.model_validate_json(reply.body)
    assert completion.choices[0].message.content == "a0 a1 a2 a3 a4 a5"
    assert completion.choices[0].finish_reason == "stop" and completion.model == "claude/test"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (7, 6) and not reply.usage.estimated


async def test_max_tokens_is_required_there_and_defaulted_here(adapter, fake):
    reply = await adapter.chat(MODEL, {"messages": [{"role": "user", "content": "x"}], "max_tokens": 3})
    assert ChatCompletion.model_validate_json(reply.body).choices[0].finish_reason == "length"
    await adapter.chat(MODEL, {"messages": [{"role": "user", "content": "x"}]})
    assert fake.requests[-1]["max_tokens"] == 4096


async def test_streamed_usage_equals_non_streamed_usage(adapter):
    body = {"messages": [{"role": "user", "content": "tell me something"}]}
    plain = await adapter.chat(MODEL, body)
    streamed = await adapter.chat_stream(MODEL, body, include_usage=True)
    chunks = await collect(streamed)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "a0 a1 a2 a3 a4 a5"
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 6, "total_tokens": 9}
    assert streamed.usage == plain.usage and streamed.first_token_us is not None
    quiet = await adapter.chat_stream(MODEL, body, include_usage=False)
    assert all("usage" not in c for c in await collect(quiet)) and quiet.usage == plain.usage


async def test_tool_calls_round_trip(adapter, fake):
    body = {"messages": [{"role": "user", "content": "what is the weather in Paris"}], "tools": TOOLS,
            "tool_choice": "required"}
    reply = await adapter.chat(MODEL, body)
    sent = fake.requests[-1]
    assert sent["tools"][0]["input_schema"]["properties"]["city"] and sent["tool_choice"] == {"type": "any"}
    message = ChatCompletion.model_validate_json(reply.body).choices[0]
    assert message.finish_reason == "tool_calls"
    call = message.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    follow_up = {"messages": [*body["messages"],
                              {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                              {"role": "tool", "tool_call_id": call.id, "content": "sunny"}], "tools": TOOLS}
    await adapter.chat(MODEL, follow_up)
    sent = fake.requests[-1]["messages"]
    assert sent[1]["content"][0] == {"type": "tool_use", "id": call.id, "name": "get_weather", "input": {"city": "Paris"}}
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]}
    streamed = await collect(await adapter.chat_stream(MODEL, body, include_usage=False))
    arguments = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments", "")
                        for c in streamed if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert json.loads(arguments) == {"city": "Paris"}


@pytest.mark.parametrize("status, kind, mapped, code", [
    (400, "invalid_request_error", 400, "upstream_rejected"), (429, "rate_limit_error", 429, "upstream_rate_limited"),
    (500, "api_error", 502, "upstream_error"), (529, "overloaded_error", 502, "upstream_error")])
async def test_errors_are_mapped(adapter, fake, status, kind, mapped, code):
    fake.fail_with = (status, kind, "nope")
    with pytest.raises(GatewayError) as info:
        await adapter.chat(MODEL, {"messages": [{"role": "user", "content": "x"}]})
    assert (info.value.status, info.value.code) == (mapped, code) and "claude" in info.value.message
    with pytest.raises(GatewayError):
        await adapter.chat_stream(MODEL, {"messages": [{"role": "user", "content": "x"}]}, False)
    assert msgspec.json.decode(info.value.body())["error"]["message"].endswith("nope")
