"""The gateway's pure rules for limits: the prompt bound, what a budget affords, which fields go upstream."""

import pytest

from domain.pricing import Price
from gateway.request_parsing import parse_chat as _parse_chat
from gateway.worst_case import MESSAGE_OVERHEAD, PROMPT_OVERHEAD, TOOLS_OVERHEAD
from gateway.worst_case import MAX_ALTERNATIVES, MAX_CANDIDATES, elsewhere
from gateway.worst_case import affordable as _affordable
from gateway.worst_case import prompt_bound as _prompt_bound
from gateway.catalog import Model
from gateway.errors import GatewayError
from gateway.fields import ANTHROPIC_CHAT_FIELDS, OPENAI_CHAT_FIELDS, OPENAI_EMBEDDINGS_FIELDS, check_fields
from gateway.providers.anthropic import to_anthropic
from gateway.providers.gemini import to_gemini

PRICE = Price.from_usd("0.5", "1.5")
MODEL = Model("p/m", "p", "m", PRICE, max_output_tokens=1000, context_tokens=50_000, image_tokens=1600)
TEXT = {"role": "user", "content": "hi"}


def bound(messages, kind="anthropic", **extra):
    return _prompt_bound({"messages": messages, **extra}, MODEL, kind)


def test_text_counts_its_json_bytes_and_the_overheads():
    assert bound([TEXT]) == PROMPT_OVERHEAD + MESSAGE_OVERHEAD + len(b'{"role":"user","content":"hi"}')


def test_an_image_counts_the_providers_worst_case_not_its_bytes():
    data = "data:image/png;base64," + "A" * 100_000
    parts = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": data}}]
    with_image = bound([{"role": "user", "content": parts}])
    text_only = bound([{"role": "user", "content": parts[:1]}])
    assert with_image - text_only == 1600


def test_files_and_gemini_url_parts_count_the_whole_context():
    file = {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}}
    assert bound([{"role": "user", "content": [file]}]) == MODEL.context_tokens
    url = {"type": "image_url", "image_url": {"url": "https://example.com/talk.mp4"}}
    assert bound([{"role": "user", "content": [url]}], kind="gemini") == MODEL.context_tokens
    assert bound([{"role": "user", "content": [url]}], kind="anthropic") < MODEL.context_tokens


def test_audio_input_is_refused_by_a_priced_model_saying_why():
    audio = {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}
    with pytest.raises(GatewayError) as refused:
        bound([{"role": "user", "content": [{"type": "text", "text": "hi"}, audio]}])
    assert refused.value.status == 400 and refused.value.param == "messages"
    assert "audio input apart from text" in refused.value.message


def test_tools_count_their_json_and_the_tool_use_preamble():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert bound([TEXT], tools=tools) - bound([TEXT]) >= TOOLS_OVERHEAD + len('{"name":"f"}')


def test_the_bound_never_exceeds_the_context():
    assert bound([{"role": "user", "content": "x" * 100_000}]) == MODEL.context_tokens


def test_what_a_budget_affords():
    prompt = PRICE.cost(100, 0)
    assert _affordable(prompt + PRICE.cost(0, 37), PRICE, 100, 1, 1000) == 37
    assert _affordable(prompt + PRICE.cost(0, 37), PRICE, 100, 2, 1000) == 18  # per choice
    assert _affordable(prompt - 1, PRICE, 100, 1, 1000) == 0
    assert _affordable(10**15, PRICE, 100, 1, 1000) == 1000  # never more than the request's own limit
    assert _affordable(None, PRICE, 100, 1, 1000) is None


def test_the_two_limit_fields_never_disagree():
    message = [{"role": "user", "content": "x"}]
    assert _parse_chat({"messages": message, "max_tokens": 5, "max_completion_tokens": 5})
    with pytest.raises(GatewayError) as refused:
        _parse_chat({"messages": message, "max_tokens": 5, "max_completion_tokens": 6})
    assert refused.value.status == 400 and "'max_tokens' (5)" in refused.value.message
    assert "'max_completion_tokens' (6)" in refused.value.message


def test_unknown_fields_are_refused_naming_them_and_what_is_allowed():
    with pytest.raises(GatewayError) as refused:
        check_fields({"messages": [], "logit_bias": {}}, ANTHROPIC_CHAT_FIELDS, "claude/x")
    assert refused.value.param == "logit_bias" and "claude/x" in refused.value.message
    assert "temperature" in refused.value.message
    check_fields({"messages": [], "logit_bias": {}}, OPENAI_CHAT_FIELDS, "gpt/x")


def test_fields_the_gateway_consumes_do_not_go_upstream():
    body = {"messages": [], "template": "greeting@2", "variables": {"name": "Ada"}}
    check_fields(body, OPENAI_CHAT_FIELDS, "gpt/x")
    assert body == {"messages": []}


@pytest.mark.parametrize(
    "field, value",
    [
        ("service_tier", "priority"),
        ("service_tier", "flex"),
        ("web_search_options", {}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("modalities", [{}]),  # not a name at all: refused, not a 500
    ],
)
def test_fields_that_change_the_price_are_refused(field, value):
    with pytest.raises(GatewayError) as refused:
        check_fields({"messages": [], field: value}, OPENAI_CHAT_FIELDS, "gpt/x")
    assert refused.value.status == 400 and refused.value.param == field
    assert "not available through Mesh" in refused.value.message  # why, not "unknown field"


def test_an_endpoint_that_applies_no_templates_refuses_their_fields():
    body = {"input": "x", "template": "greeting@2"}
    with pytest.raises(GatewayError) as refused:
        check_fields(body, OPENAI_EMBEDDINGS_FIELDS, "gpt/x", consumed=frozenset())
    assert refused.value.status == 400 and refused.value.param == "template"


def test_fields_at_the_configured_price_pass():
    check_fields({"messages": [], "service_tier": "default", "modalities": ["text"]}, OPENAI_CHAT_FIELDS, "gpt/x")


def test_anthropic_answers_one_choice_and_gets_the_models_maximum_when_no_limit_is_set():

    assert to_anthropic(MODEL, {"messages": [TEXT]}, False)["max_tokens"] == MODEL.max_output_tokens
    assert to_anthropic(MODEL, {"messages": [TEXT], "max_tokens": 7}, False)["max_tokens"] == 7
    with pytest.raises(GatewayError) as refused:
        to_anthropic(MODEL, {"messages": [TEXT], "n": 2}, False)
    assert refused.value.param == "n"


def test_openai_gets_the_limit_as_max_completion_tokens_other_servers_as_sent():
    from gateway.catalog import Provider
    from gateway.providers.openai import OpenAIAdapter

    body = {"messages": [TEXT], "max_tokens": 9}
    openai = OpenAIAdapter(Provider("o", "openai", "http://127.0.0.1:9/v1"))._document(body, MODEL, False)
    assert openai["max_completion_tokens"] == 9 and "max_tokens" not in openai and body["max_tokens"] == 9
    compatible = OpenAIAdapter(Provider("c", "openai-compatible", "http://127.0.0.1:9/v1"))._document(
        body, MODEL, False
    )
    assert compatible["max_tokens"] == 9 and "max_completion_tokens" not in compatible
    unlimited = OpenAIAdapter(Provider("o", "openai", "http://127.0.0.1:9/v1"))._document(
        {"messages": [TEXT]}, MODEL, True
    )
    assert "max_tokens" not in unlimited and "max_completion_tokens" not in unlimited


def test_an_unaffordable_request_is_told_the_max_tokens_it_affords():
    from gateway.worst_case import unaffordable as _unaffordable
    from gateway.lease_admission import BudgetRefusal

    refusal = BudgetRefusal("the account balance does not cover this request", "account_balance", 0)
    error = _unaffordable(refusal, PRICE.cost(54, 100), 54, 100, 1, 65)
    assert (error.status, error.code, error.param) == (402, "account_balance", "max_tokens")
    assert error.message.endswith("what is left affords 65 completion tokens: send max_tokens ≤ 65")
    assert "a prompt of up to 54 tokens and 100 completion tokens" in error.message
    assert "does not cover even its prompt" in _unaffordable(refusal, 1, 54, 100, 1, 0).message
    # all of it is covered once this key's requests in flight give back what they do not spend: retry then
    assert "held by this API key's requests in flight" in _unaffordable(refusal, 1, 54, 100, 1, 100).message


def test_a_reservation_prices_every_prompt_token_at_the_dearest_prompt_price():
    anthropic = Price.from_usd("3", "15", cached_prompt_usd_per_1k="0.3", cache_write_usd_per_1k="3.75")
    assert anthropic.worst_cost(1000, 10) == anthropic.cost(1000, 10, cache_write_tokens=1000)  # all written
    assert anthropic.worst_cost(1000, 10) > anthropic.cost(1000, 10)
    assert PRICE.worst_cost(1000, 10) == PRICE.cost(1000, 10)  # no cache prices: the prompt price
    assert _affordable(anthropic.worst_cost(100, 7), anthropic, 100, 1, 1000) == 7


@pytest.mark.parametrize("translate", [lambda body: to_anthropic(MODEL, body, False), to_gemini])
def test_a_content_part_an_adapter_cannot_translate_is_refused_not_dropped(translate):
    pdf = {"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}}
    with pytest.raises(GatewayError) as refused:
        translate({"messages": [{"role": "user", "content": [{"type": "text", "text": "read this"}, pdf]}]})
    assert refused.value.status == 400 and refused.value.param == "messages"
    assert "'file'" in refused.value.message and "'text' and 'image_url'" in refused.value.message
    with pytest.raises(GatewayError):
        translate({"messages": [{"role": "user", "content": ["a bare string part"]}]})
    said = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I cannot help with that."}]}
    assert "I cannot help with that." in str(translate({"messages": [said, {"role": "user", "content": "why?"}]}))


def test_a_402_names_what_the_budget_affords_on_the_other_models_the_most_first_and_bounded():
    body = {"messages": [TEXT]}
    hi = PROMPT_OVERHEAD + MESSAGE_OVERHEAD + len(b'{"role":"user","content":"hi"}')
    cheap = Model("p/cheap", "p", "cheap", Price.from_usd("0.1", "0.2"), max_output_tokens=300)
    dear = Model("p/dear", "p", "dear", Price.from_usd("10", "1000"), max_output_tokens=300)
    free = Model("p/free", "p", "free", Price(0, 0))
    available = cheap.price.cost(hi, 0) + cheap.price.cost(0, 250)  # cheap: the prompt and 250 tokens
    afforded = elsewhere(available, body, [(dear, "openai"), (cheap, "openai"), (free, "openai")], 1, None)
    assert afforded == [("p/cheap", 250), ("p/free", None)]  # dear affords nothing: not named
    assert elsewhere(available, body, [(cheap, "openai")], 1, 100) == [("p/cheap", 100)]  # what was asked
    assert elsewhere(available, body, [(cheap, "openai")], 2, None) == [("p/cheap", 125)]  # per choice
    many = [(Model(f"p/m{i:02}", "p", "m", Price.from_usd("0.1", "0.2")), "openai") for i in range(40)]
    assert len(elsewhere(available, body, many, 1, None)) == MAX_ALTERNATIVES
    audio = {"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    assert elsewhere(available, audio, [(cheap, "openai")], 1, None) == []  # cannot go there at all
    assert MAX_CANDIDATES >= MAX_ALTERNATIVES
