"""The Messages API codec (gateway/wire/messages.py): what a Messages request becomes in the internal shape, what
has no equivalent, and the internal answer and stream as Anthropic's message and events."""

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
from gateway.wire import messages, messages_request, messages_stream

GPT = Model("acme/gpt", "acme", "gpt", Price(1, 1), max_output_tokens=1000, context_tokens=10_000, image_tokens=99)
LENIENT = msgspec.structs.replace(GPT, ignore_fields=frozenset({"cache_control", "context_management"}))
GEMINI = Model("g/flash", "g", "flash", Price(1, 1))


def test_a_conversation_with_tools_images_and_thinking_translates():
    body = {
        "model": "acme/gpt",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "be kind"}],
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "metadata": {"user_id": "u1"},
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True},
                    {"type": "text", "text": "and now?"},
                ],
            },
        ],
    }
    out = messages_request.translate(body, GPT, OPENAI_CHAT_FIELDS)
    assert out.body["messages"] == [
        {"role": "system", "content": "be brief\n\nbe kind"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": "calling",
            "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "(tool error) boom"},
        {"role": "user", "content": [{"type": "text", "text": "and now?"}]},
    ]
    assert out.body["stop"] == ["END"] and out.body["user"] == "u1" and out.body["temperature"] == 0.5
    assert out.body["reasoning_effort"] == "low"  # a budget of 2,000 thinking tokens
    assert out.body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}, "description": "w"}}
    ]
    assert (out.body["tool_choice"], out.body["parallel_tool_calls"]) == ("required", False)
    assert out.ignored == [] and out.header() == []


def test_effort_and_structured_output_translate():
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    }
    out = messages_request.translate(body, GPT, OPENAI_CHAT_FIELDS)
    assert out.body["reasoning_effort"] == "xhigh"
    assert out.body["response_format"]["json_schema"]["schema"] == {"type": "object"}


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"context_management": {"edits": []}}, "context_management"),
        ({"system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]}, "cache_control"),
        ({"service_tier": "auto"}, "service_tier"),
        ({"top_k": 5}, "top_k"),  # an OpenAI-compatible server takes it only when the operator lists it
    ],
)
def test_a_field_without_an_equivalent_is_refused_by_its_name(extra, field):
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(GatewayError) as refused:
        messages_request.translate(body, GPT, OPENAI_CHAT_FIELDS)
    assert refused.value.status == 400 and refused.value.param == field
    assert f"{field!r}" in refused.value.message and "ignore_fields" in refused.value.message


def test_a_field_the_provider_takes_goes_through():
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "top_k": 5}
    assert (
        messages_request.translate(body, GPT, OPENAI_CHAT_FIELDS | {"top_k"}).body["top_k"] == 5
    )  # extra_fields lists it


def test_the_operator_may_let_fields_be_dropped_and_the_answer_says_so():
    body = {
        "model": "m",
        "max_tokens": 10,
        "context_management": {"edits": []},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"x": 1}}]}],
    }
    out = messages_request.translate(body, LENIENT, OPENAI_CHAT_FIELDS)
    assert "context_management" not in out.body and out.body["messages"][0]["content"] == [
        {"type": "text", "text": "hi"}
    ]
    assert out.header() == [(b"x-mesh-ignored-fields", b"cache_control,context_management")]


def test_a_provider_without_reasoning_refuses_thinking_and_hosted_tools_are_refused():
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(GatewayError, match="'thinking' has no equivalent"):
        messages_request.translate(
            {**body, "thinking": {"type": "enabled", "budget_tokens": 1024}}, GEMINI, GEMINI_CHAT_FIELDS
        )
    with pytest.raises(GatewayError, match="web_search_20250305"):
        messages_request.translate(
            {**body, "tools": [{"type": "web_search_20250305", "name": "s"}]}, GPT, OPENAI_CHAT_FIELDS
        )
    with pytest.raises(GatewayError, match="web_search_20250305"):
        messages.check_pass_through({**body, "tools": [{"type": "web_search_20250305", "name": "s"}]}, GPT)
    with pytest.raises(GatewayError, match="'container'"):
        messages.check_pass_through({**body, "container": "c"}, GPT)


def test_the_prompt_bound_covers_text_and_counts_images_and_documents_as_configured():
    text = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 400}]}
    assert messages.prompt_bound(text, GPT) >= 400
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 5000}}
    with_image = {**text, "messages": [{"role": "user", "content": [image]}]}
    assert messages.prompt_bound(with_image, GPT) < 5000  # the image counts its tokens, not its bytes
    document = {**text, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}
    assert messages.prompt_bound(document, GPT) == GPT.context_tokens


def test_an_answer_encodes_as_a_message_with_anthropics_usage():
    answer = {
        "id": "chatcmpl-abc",
        "choices": [
            {
                "message": {
                    "content": "hi",
                    "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": '{"a": 1}'}}],
                },
                "finish_reason": "tool_calls",
            }
        ],
    }
    usage = Usage(10, 4, cached_prompt_tokens=3, cache_write_tokens=2)
    message = json.loads(messages.encode(msgspec.json.encode(answer), usage, GPT))
    assert message["id"] == "msg_abc" and message["model"] == "acme/gpt" and message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "text", "text": "hi"},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
    ]
    assert message["usage"] == {
        "input_tokens": 5,
        "cache_creation_input_tokens": 2,
        "cache_read_input_tokens": 3,
        "output_tokens": 4,
    }


def chunk(delta: dict, finish: str | None = None) -> bytes:
    return sse(
        msgspec.json.encode({"id": "chatcmpl-x", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )


def test_a_stream_encodes_as_message_events_ending_with_the_usage():
    frames = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}) + chunk({"content": "lo"}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({}, "tool_calls") + SSE_DONE,
    ]

    async def upstream():
        for frame in frames:
            yield frame

    inner = StreamReply(upstream(), 0)
    inner.usage = Usage(7, 3)
    encoded = messages_stream.encode_stream(inner, GPT)

    async def read() -> list[bytes]:
        return [frame async for frame in encoded]

    out = asyncio.run(read())
    assert encoded.ended  # set as its last frame came, so the bill is made durable before message_stop leaves
    events = [
        json.loads(line[6:]) for frame in out for line in frame.decode().splitlines() if line.startswith("data: ")
    ]
    assert [e["type"] for e in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[6]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert "".join(e["delta"].get("partial_json", "") for e in events[7:9]) == '{"a":1}'
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    assert events[-2]["usage"] == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 3,
    }
    assert encoded.usage == Usage(7, 3)


def test_errors_take_anthropics_shape_and_type():
    for status, kind in ((400, "invalid_request_error"), (401, "authentication_error"), (402, "billing_error")):
        body = json.loads(messages.error_body(GatewayError(status, "why")))
        assert body == {"type": "error", "error": {"type": kind, "message": "why"}}
    assert json.loads(messages.error_body(GatewayError(502, "x")))["error"]["type"] == "api_error"


def test_a_streams_events_are_encoded_as_their_objects_are():
    """The events are made from templates: each is byte for byte what encoding its object gives."""
    frames = [
        chunk({"reasoning_content": "hmm"}) + chunk({"content": 'a "quoted" é\n 100%s'}),
        chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a": "%d"}'}}]}),
        chunk({}, "length") + SSE_DONE,
    ]

    async def upstream():
        for frame in frames:
            yield frame

    inner = StreamReply(upstream(), 0)
    inner.usage = Usage(7, 3)
    inner.priced = lambda usage: 12_345_000

    async def read() -> list[bytes]:
        return [frame async for frame in messages_stream.encode_stream(inner, GPT)]

    datas = [line[6:] for frame in asyncio.run(read()) for line in frame.split(b"\n") if line.startswith(b"data: ")]
    events = [msgspec.json.decode(data) for data in datas]
    assert [msgspec.json.encode(event) for event in events] == datas
    assert [e["delta"].get("thinking") or e["delta"].get("text") for e in events if e["type"] == "content_block_delta"][
        :2
    ] == ["hmm", 'a "quoted" é\n 100%s']
    assert events[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
