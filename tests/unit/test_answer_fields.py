"""What Mesh writes into an answer: the Mesh id as `model`, the charge as `usage.cost` (an exact JSON number) and
`usage.cost_usd` (a decimal string), patched in place or, for a document spelled otherwise, re-encoded."""

from __future__ import annotations

import json
from decimal import Decimal

from gateway.answer_fields import MAX_MODEL_NAME, cost_fields, cost_usd, model_name, patched, with_cost, with_model

NAME = model_name("acme/gpt-test")


def read(document: bytes) -> dict:
    return json.loads(document, parse_float=Decimal)


def test_the_model_and_cost_are_patched_in_place_exactly():
    upstream = (
        b'{"id":"c","object":"chat.completion","model":"gpt-test-2024-07-18","choices":[],"usage":{"prompt_tokens":3}}'
    )
    answer = patched(upstream, NAME, cost_usd(12_345_678))  # 12,345,678 pico-USD
    assert answer == (
        b'{"id":"c","object":"chat.completion","model":"acme/gpt-test","choices":[],'
        b'"usage":{"cost":0.000012345678,"cost_usd":"0.000012345678","prompt_tokens":3}}'
    )
    assert read(answer)["usage"]["cost"] == Decimal("0.000012345678")  # no float rounding on Mesh's side


def test_text_that_looks_like_a_key_is_left_alone():
    upstream = b'{"choices":[{"message":{"content":"\\"model\\":\\"x\\", \\"usage\\":{"}}],"model":"m","usage":{}}'
    answer = read(patched(upstream, NAME, cost_usd(10**12)))
    assert answer["model"] == "acme/gpt-test" and answer["choices"][0]["message"]["content"].startswith('"model":"x"')
    assert answer["usage"] == {"cost": Decimal("1.000000"), "cost_usd": "1.000000"}


def test_a_document_spelled_otherwise_takes_the_slow_path():
    spaced = b'{"model": "gpt-test", "usage": {"prompt_tokens": 1}}'
    assert read(patched(spaced, NAME, cost_usd(1))) == {
        "model": "acme/gpt-test",
        "usage": {"prompt_tokens": 1, "cost": Decimal("0.000000000001"), "cost_usd": "0.000000000001"},
    }
    nested_first = b'{"content":[{"type":"tool_use","input":{"model":"x","usage":{}}}],"model":"claude","usage":{}}'
    answer = read(patched(nested_first, NAME, cost_usd(1)))
    assert answer["model"] == "acme/gpt-test" and answer["content"][0]["input"] == {"model": "x", "usage": {}}
    assert answer["usage"]["cost_usd"] == "0.000000000001"
    escaped = b'{"model":"a\\/b"}'
    assert read(with_model(escaped, NAME)) == {"model": "acme/gpt-test"}
    long_name = b'{"model":"' + b"x" * (MAX_MODEL_NAME + 1) + b'"}'
    assert read(with_model(long_name, NAME)) == {"model": "acme/gpt-test"}


def test_an_upstreams_own_cost_is_replaced_not_repeated():
    answer = with_cost(b'{"usage":{"prompt_tokens":1,"cost":0.5}}', cost_usd(2 * 10**12))
    assert answer.count(b'"cost"') == 1 and read(answer)["usage"]["cost"] == Decimal("2.000000")


def test_a_document_without_model_or_usage_is_unchanged():
    assert patched(b'{"object":"list","data":[]}', NAME, cost_usd(5)) == b'{"object":"list","data":[]}'
    assert patched(b"not json", NAME, cost_usd(5)) == b"not json"


def test_cost_fields_for_a_document_mesh_encodes():
    import msgspec

    assert msgspec.json.encode(cost_fields(1)) == b'{"cost":0.000000000001,"cost_usd":"0.000000000001"}'


def test_a_streams_usage_chunk_states_the_cost_the_gateway_prices():
    from gateway.providers.base import StreamReply, Usage
    from gateway.providers.streams import usage_chunk

    async def nothing():
        yield b""

    reply = StreamReply(nothing(), 0)
    reply.usage = Usage(10, 20)
    assert reply.cost() is None  # no price known: no cost stated
    assert b'"cost"' not in usage_chunk({"id": "c"}, reply.usage, reply.cost())
    reply.priced = lambda usage: usage.prompt_tokens * 10**9 + usage.completion_tokens * 3 * 10**9
    chunk = read(usage_chunk({"id": "c"}, reply.usage, reply.cost())[len(b"data: ") :])
    assert chunk["usage"]["cost"] == Decimal("0.070000") and chunk["usage"]["cost_usd"] == "0.070000"
