"""The Gemini adapter against a fake that speaks generateContent / streamGenerateContent (SSE)."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from domain.pricing import Price
from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.providers.gemini import GeminiAdapter
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.server import BackgroundServer

MODEL = Model("google/flash", "google", "gemini-test", Price.from_usd("0.1", "0.4"))
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.fixture(scope="module")
def fake():
    upstream = FakeGemini(reply_words=5, api_key="g-key")
    with BackgroundServer(upstream) as server:
        upstream.url = server.url
        yield upstream


@pytest.fixture
async def adapter(fake):
    fake.fail_with = None
    a = GeminiAdapter(Provider("google", "gemini", fake.url + "/v1beta", "g-key", 2.0, 5.0))
    yield a
    await a.aclose()


async def collect(reply) -> list[dict]:
    chunks = []
    async for frame in reply:
        data = frame.decode().removeprefix("data: ").strip()
        if data != "[DONE]":
            ChatCompletionChunk.model_validate_json(data)
            chunks.append(json.loads(data))
    return chunks


async def test_a_chat_is_translated_both_ways(adapter, fake):
    body = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [
        {"type": "text", "text": "look at this"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,BBBB"}}]}],
            "max_tokens": 50, "temperature": 0.5, "stop": ["END"], "n": 1,
            "response_format": {"type": "json_object"}}
    reply = await adapter.chat(MODEL, body)
    sent = fake.requests[-1]
    assert sent["_model"] == "gemini-test" and sent["systemInstruction"] == {"parts": [{"text": "be brief"}]}
    assert sent["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/jpeg", "data": "BBBB"}}
    assert sent["generationConfig"] == {"maxOutputTokens": 50, "temperature": 0.5, "candidateCount": 1,
                                        "stopSequences": ["END"], "responseMimeType": "application/json"}
    completion = ChatCompletion.model_validate_json(reply.body)
    assert completion.choices[0].message.content == "g0 g1 g2 g3 g4" and completion.model == "google/flash"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (5, 5) and not reply.usage.estimated


async def test_streamed_usage_equals_non_streamed_usage(adapter):
    body = {"messages": [{"role": "user", "content": "say something"}]}
    plain = await adapter.chat(MODEL, body)
    streamed = await adapter.chat_stream(MODEL, body, include_usage=True)
    chunks = await collect(streamed)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "g0 g1 g2 g3 g4"
    assert chunks[-1]["usage"]["completion_tokens"] == 5 and streamed.usage == plain.usage
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    quiet = await adapter.chat_stream(MODEL, body, include_usage=False)
    assert all("usage" not in c for c in await collect(quiet))


async def test_tool_calls_round_trip(adapter, fake):
    body = {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": TOOLS}
    reply = ChatCompletion.model_validate_json((await adapter.chat(MODEL, body)).body)
    call = reply.choices[0].message.tool_calls[0]
    assert reply.choices[0].finish_reason == "tool_calls" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.requests[-1]["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "", "parameters": {"type": "object"}}]}]
    await adapter.chat(MODEL, {"messages": [*body["messages"],
                                            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
                                            {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}],
                               "tools": TOOLS})
    sent = fake.requests[-1]["contents"]
    assert sent[1] == {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]}
    assert sent[2] == {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                                       "response": {"temp": 21}}}]}


@pytest.mark.parametrize("code, status, mapped, error_code", [
    (400, "INVALID_ARGUMENT", 400, "upstream_rejected"), (429, "RESOURCE_EXHAUSTED", 429, "upstream_rate_limited"),
    (503, "UNAVAILABLE", 502, "upstream_error")])
async def test_errors_are_mapped(adapter, fake, code, status, mapped, error_code):
    fake.fail_with = (code, status, "quota says no")
    with pytest.raises(GatewayError) as info:
        await adapter.chat(MODEL, {"messages": [{"role": "user", "content": "x"}]})
    assert (info.value.status, info.value.code) == (mapped, error_code) and "quota says no" in info.value.message
