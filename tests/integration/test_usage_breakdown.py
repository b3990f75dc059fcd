"""Every adapter reads its provider's cache and reasoning counts, plain and streamed, from fakes that send them in
the provider's own wire format over real HTTP; the client gets them in OpenAI's usage shape."""

from __future__ import annotations

import json

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from domain.pricing import Price
from gateway.catalog import Model, Provider
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import Usage
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai import OpenAIAdapter
from tests.fakes.caching import MESSAGES, REPORTED, caching_fakes
from tests.fakes.server import BackgroundServer

PRICE = Price.from_usd("1", "2", "0.1", "1.25")
BODY = {"messages": MESSAGES}


@pytest.fixture(scope="module")
def fakes():
    fakes = caching_fakes()
    with (
        BackgroundServer(fakes["openai"]) as o,
        BackgroundServer(fakes["anthropic"]) as a,
        BackgroundServer(fakes["gemini"]) as g,
    ):
        yield {
            "fakes": fakes,
            "openai": (OpenAIAdapter, Provider("acme", "openai", o.url + "/v1")),
            "anthropic": (AnthropicAdapter, Provider("claude", "anthropic", a.url + "/v1")),
            "gemini": (GeminiAdapter, Provider("google", "gemini", g.url + "/v1beta")),
        }


EXPECTED = {  # what each fake reports for BODY, as Mesh counts it: the parts are within the totals
    kind: Usage(
        fresh + read + written, out, cached_prompt_tokens=read, cache_write_tokens=written, reasoning_tokens=reasoning
    )
    for kind, (fresh, read, written, out, reasoning) in REPORTED.items()
}


@pytest.fixture(params=["openai", "anthropic", "gemini"])
async def case(request, fakes):
    make, provider = fakes[request.param]
    adapter = make(provider)
    yield request.param, adapter, Model("m", provider.name, "model-1", PRICE)
    await adapter.aclose()


async def test_a_plain_reply_carries_the_breakdown(case):
    kind, adapter, model = case
    reply = await adapter.chat(model, BODY)
    assert reply.usage == EXPECTED[kind] and not reply.usage.estimated
    usage = ChatCompletion.model_validate_json(reply.body).usage
    assert usage.prompt_tokens_details.cached_tokens == EXPECTED[kind].cached_prompt_tokens
    assert usage.completion_tokens_details.reasoning_tokens == EXPECTED[kind].reasoning_tokens
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        EXPECTED[kind].prompt_tokens,
        EXPECTED[kind].completion_tokens,
    )


async def test_a_stream_carries_the_breakdown(case):
    kind, adapter, model = case
    reply = await adapter.chat_stream(model, BODY, include_usage=True)
    frames = [frame async for frame in reply]
    chunks = [
        ChatCompletionChunk.model_validate_json(line[6:])
        for frame in frames
        for line in frame.split(b"\n\n")
        if line.startswith(b"data: {")
    ]
    assert reply.usage == EXPECTED[kind] and not reply.usage.estimated
    usage = chunks[-1].usage
    assert usage.prompt_tokens_details.cached_tokens == EXPECTED[kind].cached_prompt_tokens
    assert usage.completion_tokens_details.reasoning_tokens == EXPECTED[kind].reasoning_tokens
    assert "t0" not in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # thinking not shown
    assert "thinking it over" not in json.dumps([c.model_dump() for c in chunks])


async def test_the_cost_charges_each_part_at_its_price(case):
    kind, adapter, model = case
    usage = (await adapter.chat(model, BODY)).usage
    fresh = usage.prompt_tokens - usage.cached_prompt_tokens - usage.cache_write_tokens
    pico = 10**9  # 1 USD per 1K tokens = 10**9 pico-USD per token
    assert PRICE.cost(
        usage.prompt_tokens, usage.completion_tokens, usage.cached_prompt_tokens, usage.cache_write_tokens
    ) == (
        fresh * pico
        + usage.cached_prompt_tokens * pico // 10
        + usage.cache_write_tokens * pico * 5 // 4
        + usage.completion_tokens * 2 * pico
    )


async def test_an_anthropic_stream_whose_final_usage_has_output_tokens_only_keeps_the_cache_counts(fakes):
    fake = fakes["fakes"]["anthropic"]
    make, provider = fakes["anthropic"]
    adapter = make(provider)
    fake.full_delta_usage = False  # as older answers: message_delta carries output_tokens only
    try:
        reply = await adapter.chat_stream(Model("m", "claude", "model-1", PRICE), BODY, include_usage=False)
        [frame async for frame in reply]
    finally:
        fake.full_delta_usage = True
        await adapter.aclose()
    assert reply.usage == EXPECTED["anthropic"]
