"""The Responses API codec (gateway/wire/responses.py): items to messages, what is refused, the internal answer and
stream as a response and its events."""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from domain.pricing import Price
from gateway.catalog import Model
from gateway.errors import GatewayError
from gateway.fields import GEMINI_CHAT_FIELDS, OPENAI_CHAT_FIELDS
from gateway.providers.base import SSE_DONE, StreamReply, Usage, sse
from gateway.wire import responses, responses_stream

GPT = Model("acme/gpt", "acme", "gpt", Price(1, 1))
GEMINI = Model("g/flash", "g", "flash", Price(1, 1))


def test_items_tools_and_settings_translate():
    body = {
        "model": "acme/gpt",
        "instructions": "be brief",
        "max_output_tokens": 64,
        "reasoning": {"effort": "low"},
        "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}, "strict": True}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"},
        "store": False,
        "truncation": "disabled",
        "input": [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "look"},
                    {"type": "input_image", "image_url": "https://x/y.png", "detail": "high"},
                ],
            },
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "calling"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
            {"type": "reasoning", "id": "rs_1", "summary": []},
        ],
    }
    out = responses.translate(body, GPT, OPENAI_CHAT_FIELDS).body
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "high"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "done"},
    ]
    assert out["max_tokens"] == 64 and out["reasoning_effort"] == "low"
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": True},
    }
    assert out["tools"] == [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}, "strict": True}}
    ]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"store": True}, "store"),
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
    ],
)
def test_stateful_fields_are_refused_saying_mesh_is_stateless(extra, param):
    with pytest.raises(GatewayError) as refused:
        responses.parse({"model": "m", "input": "hi", **extra})
    assert refused.value.param == param and "stateless" in refused.value.message


def test_hosted_tools_and_fields_without_an_equivalent_are_refused_by_name():
    for tool in ("web_search", "file_search", "computer_use_preview", "code_interpreter"):
        with pytest.raises(GatewayError, match=f"'{tool}'"):
            responses.translate({"model": "m", "input": "hi", "tools": [{"type": tool}]}, GPT, OPENAI_CHAT_FIELDS)
    with pytest.raises(GatewayError, match="'reasoning' has no equivalent"):
        responses.translate({"model": "m", "input": "hi", "reasoning": {"effort": "high"}}, GEMINI, GEMINI_CHAT_FIELDS)
    with pytest.raises(GatewayError, match="'include' has no equivalent"):
        responses.translate({"model": "m", "input": "hi", "include": ["x"]}, GPT, OPENAI_CHAT_FIELDS)
    lenient = msgspec.structs.replace(GPT, ignore_fields=frozenset({"include"}))
    dropped = responses.translate({"model": "m", "input": "hi", "include": ["x"]}, lenient, OPENAI_CHAT_FIELDS)
    assert "include" not in dropped.body and dropped.header() == [(b"x-mesh-ignored-fields", b"include")]


def test_an_answer_encodes_as_a_response_with_its_usage():
    answer = {
        "choices": [
            {
                "message": {
                    "content": "hi",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                },
                "finish_reason": "length",
            }
        ]
    }
    usage = Usage(10, 4, cached_prompt_tokens=3, reasoning_tokens=1)
    response = json.loads(responses.encode(msgspec.json.encode(answer), usage, GPT, {"input": "x"}))
    assert response["object"] == "response" and response["status"] == "incomplete" and response["model"] == "acme/gpt"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"} and response["store"] is False
    assert [i["type"] for i in response["output"]] == ["message", "function_call"]
    assert response["output"][0]["content"][0] == {"type": "output_text", "text": "hi", "annotations": []}
    assert response["output"][1]["call_id"] == "c1"
    assert response["usage"] == {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 3},
        "output_tokens": 4,
        "output_tokens_details": {"reasoning_tokens": 1},
        "total_tokens": 14,
    }


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return sse(msgspec.json.encode({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))


def test_a_stream_encodes_as_response_events_in_sequence():
    frames = [
        chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}),
        chunk({"content": "lo"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk({}, "tool_calls") + SSE_DONE,
    ]

    async def upstream():
        for frame in frames:
            yield frame

    inner = StreamReply(upstream(), 0)
    inner.usage = Usage(5, 2)
    encoded = responses_stream.encode_stream(inner, GPT, {"input": "x"})

    async def read() -> list[bytes]:
        return [frame async for frame in encoded]

    out = asyncio.run(read())
    events = [
        json.loads(line[6:]) for frame in out for line in frame.decode().splitlines() if line.startswith("data: ")
    ]
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Hello" and events[11]["arguments"] == "{}"
    final = events[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call"]
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["output_tokens"] == 2
    assert encoded.ended  # set as its last frame came: the bill is made durable before it leaves


def test_a_streams_events_are_encoded_as_their_objects_are_and_its_response_keeps_its_creation_time(monkeypatch):
    """The events are made from templates: each is byte for byte what encoding its object gives, and the response
    in the last event is the one of the first (created_at too, however long the stream ran) with its end."""
    clock = iter(range(1_700_000_000, 1_700_000_100))
    monkeypatch.setattr(responses.time, "time", lambda: next(clock))
    frames = [
        chunk({"content": 'a "quoted" é\n'}) + chunk({"tool_calls": [{"index": 0, "id": "c", "function": {}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": '{"x": "100%"}'}}]}),
        chunk({"content": "more"}) + chunk({}, "length") + SSE_DONE,
    ]

    async def upstream():
        for frame in frames:
            yield frame

    inner = StreamReply(upstream(), 0)
    inner.usage = Usage(5, 2)
    body = {"input": "x", "instructions": "100%s", "tools": [{"type": "function", "name": "f"}], "metadata": {"k": 1}}
    encoded = responses_stream.encode_stream(inner, GPT, body)

    async def read() -> list[bytes]:
        return [frame async for frame in encoded]

    datas = [line[6:] for frame in asyncio.run(read()) for line in frame.split(b"\n") if line.startswith(b"data: ")]
    events = [msgspec.json.decode(data) for data in datas]
    assert [msgspec.json.encode(event) for event in events] == datas
    first, last = events[0]["response"], events[-1]["response"]
    assert last["status"] == "incomplete" and last["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [item["type"] for item in last["output"]] == ["message", "function_call", "message"]
    assert last["output"][0]["content"][0]["text"] == 'a "quoted" é\n'
    assert last["output"][1]["arguments"] == '{"x": "100%"}' and last["usage"]["output_tokens"] == 2
    changed = {"status", "incomplete_details", "output", "usage"}
    assert {k: v for k, v in last.items() if k not in changed} == {k: v for k, v in first.items() if k not in changed}
