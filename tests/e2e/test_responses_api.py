"""OpenAI's Responses API through Mesh (POST /v1/responses) with the openai SDK and the Agents SDK's default model,
translated for an OpenAI-compatible and an Anthropic upstream: plain, streamed, tools, JSON schema; billed exactly
and logged with api "responses"."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import MeshProcess, funded_key
from tests.e2e.test_messages_api import logged
from tests.e2e.test_walking_skeleton import wait_for_balance
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI, count_words
from tests.fakes.server import BackgroundServer

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "the weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def responses_mesh(tmp_path_factory):
    """One Mesh with an OpenAI-compatible model (alias gpt-test) and a Claude model, each on a fake upstream."""
    gpt, claude = FakeOpenAI(reply_words=7), FakeAnthropic(reply_words=6, api_key="sk-ant-secret")
    gemini = FakeGemini(reply_words=5, api_key="g-secret")
    with (
        BackgroundServer(gpt) as gpt_server,
        BackgroundServer(claude) as claude_server,
        BackgroundServer(gemini) as gemini_server,
    ):
        base = tmp_path_factory.mktemp("responses")
        config = base / "mesh.toml"
        config.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{gpt_server.url}/v1"

[providers.claude]
kind = "anthropic"
base_url = "{claude_server.url}/v1"
api_key_env = "ANTHROPIC_TEST_KEY"

[providers.google]
kind = "gemini"
base_url = "{gemini_server.url}/v1beta"
api_key_env = "GEMINI_TEST_KEY"

[[models]]
id = "google/flash"
provider = "google"
upstream = "gemini-test"
prompt_usd_per_1k = "0.1"
completion_usd_per_1k = "0.4"
max_output_tokens = 1000

[[models]]
id = "acme/gpt"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 256
aliases = ["gpt-test"]

[[models]]
id = "claude/sonnet"
provider = "claude"
upstream = "claude-sonnet-4-5"
prompt_usd_per_1k = "3"
completion_usd_per_1k = "15"
max_output_tokens = 1000
""")
        mesh = MeshProcess(
            base / "data", config, {"ANTHROPIC_TEST_KEY": "sk-ant-secret", "GEMINI_TEST_KEY": "g-secret"}
        )
        mesh.start()
        mesh.gemini = gemini
        yield mesh, gpt, claude
        mesh.stop()


def gpt_cost(prompt: int, completion: int) -> Decimal:
    return (prompt * Decimal("0.5") + completion * Decimal("1.5")) / 1000


def claude_cost(prompt: int, completion: int) -> Decimal:
    return (prompt * Decimal(3) + completion * Decimal(15)) / 1000


def test_the_openai_sdk_creates_responses_plain_streamed_with_tools_and_a_schema(responses_mesh):
    mesh, fake, _ = responses_mesh
    s = funded_key(mesh, "5", label="responses")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=s.key, max_retries=0)
    plain = client.responses.create(
        model="acme/gpt", instructions="be brief", input="hello there", max_output_tokens=50
    )
    assert plain.output_text == "w0 w1 w2 w3 w4 w5 w6" and plain.status == "completed" and plain.model == "acme/gpt"
    assert (plain.usage.input_tokens, plain.usage.output_tokens, plain.usage.total_tokens) == (4, 7, 11)
    assert fake.requests[-1]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    assert fake.requests[-1]["max_tokens"] == 50

    events = list(client.responses.create(model="acme/gpt", input="hello there", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    for kind in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.output_item.done",
    ):
        assert kind in kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "w0 w1 w2 w3 w4 w5 w6"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage.output_tokens == 7 and events[-1].response.output_text == "w0 w1 w2 w3 w4 w5 w6"

    called = client.responses.create(model="acme/gpt", input="weather in Paris?", tools=[WEATHER])
    [call] = called.output
    assert (
        call.type == "function_call" and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    )
    streamed = list(client.responses.create(model="acme/gpt", input="weather in Paris?", tools=[WEATHER], stream=True))
    arguments = "".join(e.delta for e in streamed if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"city": "Paris"}
    assert [e.arguments for e in streamed if e.type == "response.function_call_arguments.done"] == [arguments]
    answered = client.responses.create(
        model="acme/gpt",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert answered.output_text == "w0 w1 w2 w3 w4 w5 w6"
    assert fake.requests[-1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.call_id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"},
    ]

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    client.responses.create(
        model="acme/gpt",
        input="hello there",
        text={"format": {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}},
    )
    assert fake.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": True},
    }
    # (4 + 7), (2 + 7), (3 + 5), (3 + 5), (4 + 7), (2 + 7) tokens: the fake counts message words
    costs = [gpt_cost(4, 7), gpt_cost(2, 7), gpt_cost(3, 5), gpt_cost(3, 5), gpt_cost(4, 7), gpt_cost(2, 7)]
    entries = logged(mesh, s.token, 6)
    assert [Decimal(e["cost_usd"]) for e in entries] == costs and {e["api"] for e in entries} == {"responses"}
    assert Decimal(wait_for_balance(mesh, s.token, Decimal(5) - sum(costs))["balance_usd"]) == Decimal(5) - sum(costs)


def test_reasoning_effort_goes_upstream_and_usage_has_its_breakdown(responses_mesh):
    mesh, fake, _ = responses_mesh
    s = funded_key(mesh, "5", label="reasoning")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=s.key, max_retries=0)
    fake.reasoning_tokens, fake.cached_tokens = 3, 2
    try:
        plain = client.responses.create(model="acme/gpt", input="hello there", reasoning={"effort": "high"})
        [done] = [
            e.response
            for e in client.responses.create(model="acme/gpt", input="hello there", stream=True)
            if e.type == "response.completed"
        ]
    finally:
        fake.reasoning_tokens, fake.cached_tokens = 0, 0
    assert fake.requests[-2]["reasoning_effort"] == "high"
    for usage in (plain.usage, done.usage):
        assert (usage.input_tokens, usage.output_tokens) == (2, 10)
        assert usage.input_tokens_details.cached_tokens == 2 and usage.output_tokens_details.reasoning_tokens == 3
    entries = logged(mesh, s.token, 2)
    assert [(e["reasoning_tokens"], e["cached_prompt_tokens"]) for e in entries] == [(3, 2), (3, 2)]
    assert [Decimal(e["cost_usd"]) for e in entries] == [gpt_cost(2, 10)] * 2  # no cache price: the prompt's


def test_responses_reach_an_anthropic_model(responses_mesh):
    mesh, _, fake = responses_mesh
    s = funded_key(mesh, "50", label="claude responses")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=s.key, max_retries=0)
    plain = client.responses.create(model="claude/sonnet", instructions="be brief", input="hello there")
    assert plain.output_text == "a0 a1 a2 a3 a4 a5" and fake.requests[-1]["system"] == "be brief"
    events = list(
        client.responses.create(model="claude/sonnet", input="weather in Paris?", tools=[WEATHER], stream=True)
    )
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert done[0].type == "function_call" and json.loads(done[0].arguments) == {"city": "Paris"}
    assert fake.requests[-1]["tools"][0]["name"] == "get_weather"
    costs = [claude_cost(4, 6), claude_cost(3, 5)]
    entries = logged(mesh, s.token, 2)
    assert [Decimal(e["cost_usd"]) for e in entries] == costs and {e["api"] for e in entries} == {"responses"}
    assert Decimal(wait_for_balance(mesh, s.token, Decimal(50) - sum(costs))["balance_usd"]) == Decimal(50) - sum(costs)


def test_responses_reach_a_gemini_model_and_limits_are_named_as_sent(responses_mesh):
    mesh, _, _ = responses_mesh
    s = funded_key(mesh, "1", label="gemini responses")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=s.key, max_retries=0)
    plain = client.responses.create(model="google/flash", input="say five words")
    assert plain.output_text == "g0 g1 g2 g3 g4" and plain.usage.input_tokens == 3
    events = list(
        client.responses.create(model="google/flash", input="weather in Paris?", tools=[WEATHER], stream=True)
    )
    [call] = [e.item for e in events if e.type == "response.output_item.done"]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    assert mesh.gemini.requests[-1]["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    too_long = http_calls.post(
        mesh.url + "/v1/responses",
        json={"model": "google/flash", "input": "hi", "max_output_tokens": 5000},
        headers={"authorization": f"Bearer {s.key}"},
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "max_output_tokens"
    assert "send max_output_tokens <= 1000" in too_long.json()["error"]["message"]
    costs = [(Decimal(3) * Decimal("0.1") + Decimal(5) * Decimal("0.4")) / 1000]
    entries = logged(mesh, s.token, 2)
    assert Decimal(entries[0]["cost_usd"]) == costs[0] and {e["api"] for e in entries} == {"responses"}


@pytest.mark.parametrize(
    "extra, param, words",
    [
        ({"store": True}, "store", "stateless"),
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stateless"),
        ({"tools": [{"type": "web_search"}]}, "tools", "'web_search'"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools", "'file_search'"),
        ({"tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools", "'code_interpreter'"),
    ],
)
def test_stateful_requests_and_hosted_tools_are_refused_by_name(responses_mesh, extra, param, words):
    mesh, _, _ = responses_mesh
    s = funded_key(mesh, "1", label="refused")
    r = http_calls.post(
        mesh.url + "/v1/responses",
        json={"model": "acme/gpt", "input": "hi", **extra},
        headers={"authorization": f"Bearer {s.key}"},
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == param and words in r.json()["error"]["message"]
    assert http_calls.get(mesh.url + "/api/logs", headers={"authorization": f"Bearer {s.token}"}).json()["data"] == []


def test_the_agents_sdk_runs_an_agent_turn_with_a_tool(responses_mesh):
    agents = pytest.importorskip("agents")
    mesh, fake, _ = responses_mesh
    s = funded_key(mesh, "5", label="agents")
    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "sunny"

    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(openai.AsyncOpenAI(base_url=mesh.url + "/v1", api_key=s.key, max_retries=0))
    agents.set_default_openai_api("responses")
    agent = agents.Agent(name="forecaster", instructions="answer briefly", model="gpt-test", tools=[get_weather])
    result = asyncio.run(agents.Runner.run(agent, "what is the weather in Paris?"))
    assert asked == ["Paris"] and result.final_output == "w0 w1 w2 w3 w4 w5 w6"
    assert (
        fake.requests[-1]["messages"][-1]["role"] == "tool" and fake.requests[-1]["messages"][-1]["content"] == "sunny"
    )
    entries = logged(mesh, s.token, 2)
    assert {e["api"] for e in entries} == {"responses"} and [e["requested_model"] for e in entries] == ["gpt-test"] * 2
    costs = [Decimal(e["cost_usd"]) for e in entries]
    first, second = fake.requests[-2], fake.requests[-1]
    assert costs == [gpt_cost(count_words(first["messages"]), 5), gpt_cost(count_words(second["messages"]), 7)]
    assert Decimal(wait_for_balance(mesh, s.token, Decimal(5) - sum(costs))["balance_usd"]) == Decimal(5) - sum(costs)
