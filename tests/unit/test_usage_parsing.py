"""Each provider's usage, in its own wire format, as Mesh counts it: prompt_tokens is the whole prompt (cache reads
and writes included), completion_tokens includes reasoning, and the breakdown says which part is which."""

from __future__ import annotations

import msgspec

from domain.pricing import Price
from gateway.catalog import Model
from gateway.providers import anthropic, gemini, openai
from gateway.providers.base import Usage, prompt_text


def test_openai_cached_and_reasoning_tokens_are_parts_of_the_totals():
    document = openai._decode_document(
        b'{"choices": [], "usage": {"prompt_tokens": 2006, "completion_tokens": 300,'
        b' "total_tokens": 2306, "prompt_tokens_details": {"cached_tokens": 1920,'
        b' "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 192,'
        b' "audio_tokens": 0, "accepted_prediction_tokens": 0,'
        b' "rejected_prediction_tokens": 0}}}'
    )
    assert document.usage.counted() == Usage(2006, 300, cached_prompt_tokens=1920, reasoning_tokens=192)


def test_openai_compatible_servers_without_details_or_with_nulls():
    plain = openai._decode_document(b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7}}')
    nulls = openai._decode_document(
        b'{"usage": {"prompt_tokens": 5, "completion_tokens": 7,'
        b' "prompt_tokens_details": null, "completion_tokens_details": null}}'
    )
    assert plain.usage.counted() == nulls.usage.counted() == Usage(5, 7)


def test_anthropic_input_tokens_leave_out_cache_reads_and_writes():
    usage = anthropic._usage(
        {"input_tokens": 50, "cache_creation_input_tokens": 248, "cache_read_input_tokens": 1800, "output_tokens": 503}
    )
    assert usage == Usage(50 + 248 + 1800, 503, cached_prompt_tokens=1800, cache_write_tokens=248)
    assert anthropic._usage({"input_tokens": 9, "output_tokens": 1}) == Usage(9, 1)  # older answers: no cache fields


def test_anthropic_reply_reports_the_breakdown_in_openai_shape():
    message = {
        "id": "msg_1",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, {"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 1000,
            "output_tokens": 40,
        },
    }
    model = Model("claude/test", "claude", "claude-test", Price.from_usd("3", "15"))
    document, usage = anthropic.to_openai(model, message, {"messages": []})
    assert document["choices"][0]["message"]["content"] == "hi"
    assert document["usage"] == {
        "prompt_tokens": 1003,
        "completion_tokens": 40,
        "total_tokens": 1043,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }
    assert usage.cached_prompt_tokens == 1000


def test_anthropic_cache_writes_travel_as_cache_write_tokens():
    assert Usage(100, 1, cache_write_tokens=60).openai()["prompt_tokens_details"] == {
        "cached_tokens": 0,
        "cache_write_tokens": 60,
    }


def test_gemini_cached_tokens_are_in_the_prompt_count_and_thoughts_are_added_to_the_completion():
    usage = gemini._usage(
        {
            "promptTokenCount": 1200,
            "cachedContentTokenCount": 1024,
            "candidatesTokenCount": 80,
            "thoughtsTokenCount": 300,
            "toolUsePromptTokenCount": 20,
            "totalTokenCount": 1600,
        }
    )
    assert usage == Usage(1220, 380, cached_prompt_tokens=1024, reasoning_tokens=300)


def test_a_part_larger_than_its_whole_is_cut_to_what_is_left():
    assert Usage(10, 5, cached_prompt_tokens=8, cache_write_tokens=8, reasoning_tokens=9) == Usage(
        10, 5, cached_prompt_tokens=8, cache_write_tokens=2, reasoning_tokens=5
    )
    assert msgspec.json.decode(b'{"prompt_tokens": 3, "cached_prompt_tokens": 7}', type=Usage).cached_prompt_tokens == 3


def test_an_estimate_counts_everything_sent_but_images():
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 999}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [tool],
        "response_format": {"type": "json_object"},
    }
    text = prompt_text(body)
    for sent in (
        "weather?",
        "get_weather",
        '{"city":"Paris"}',
        "sunny",
        msgspec.json.encode([tool]).decode(),
        '{"type":"json_object"}',
    ):
        assert sent in text
    assert "AAAA" not in text  # an image's tokens depend on the provider, not on its base64 length
