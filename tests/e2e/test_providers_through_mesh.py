"""Anthropic and Gemini models behind Mesh, used with the official openai SDK: plain, streamed, tools, metered."""

from __future__ import annotations

import json
from decimal import Decimal

import openai
import pytest

from tests.e2e.conftest import MeshProcess, funded_key
from tests.e2e.test_walking_skeleton import wait_for_balance
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.server import BackgroundServer


@pytest.fixture(scope="module")
def providers_mesh(tmp_path_factory):
    """One Mesh for both providers, each on a fake upstream of its own: (the Mesh, the fakes by kind)."""
    claude, gemini = (
        FakeAnthropic(reply_words=6, api_key="sk-ant-secret"),
        FakeGemini(reply_words=5, api_key="g-secret"),
    )
    with BackgroundServer(claude) as claude_server, BackgroundServer(gemini) as gemini_server:
        base = tmp_path_factory.mktemp("providers")
        config = base / "mesh.toml"
        config.write_text(f"""
[providers.claude]
kind = "anthropic"
base_url = "{claude_server.url}/v1"
api_key_env = "ANTHROPIC_TEST_KEY"

[providers.google]
kind = "gemini"
base_url = "{gemini_server.url}/v1beta"
api_key_env = "GEMINI_TEST_KEY"

[[models]]
id = "claude/test"
provider = "claude"
upstream = "claude-test-1"
prompt_usd_per_1k = "3"
completion_usd_per_1k = "15"

[[models]]
id = "google/flash"
provider = "google"
upstream = "gemini-test"
prompt_usd_per_1k = "0.1"
completion_usd_per_1k = "0.4"
max_output_tokens = 1000
""")
        mesh = MeshProcess(
            base / "data", config, {"ANTHROPIC_TEST_KEY": "sk-ant-secret", "GEMINI_TEST_KEY": "g-secret"}
        )
        mesh.start()
        yield mesh, {"anthropic": claude, "gemini": gemini}
        mesh.stop()


@pytest.fixture(scope="module")
def claude_mesh(providers_mesh):
    mesh, fakes = providers_mesh
    return mesh, fakes["anthropic"]


@pytest.fixture(scope="module")
def gemini_mesh(providers_mesh):
    mesh, fakes = providers_mesh
    return mesh, fakes["gemini"]


def test_the_openai_sdk_talks_to_an_anthropic_model(claude_mesh):
    mesh, fake = claude_mesh
    s = funded_key(mesh, "5", label="claude")
    key = s.key
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    plain = client.chat.completions.create(model="claude/test", messages=messages, max_tokens=50)
    assert plain.choices[0].message.content == "a0 a1 a2 a3 a4 a5"
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (4, 6)
    assert fake.requests[-1]["system"] == "be brief" and fake.headers[-1]["x-api-key"] == "sk-ant-secret"
    chunks = list(
        client.chat.completions.create(
            model="claude/test", messages=messages, max_tokens=50, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a0 a1 a2 a3 a4 a5"
    assert chunks[-1].usage.completion_tokens == 6
    tool = client.chat.completions.create(
        model="claude/test",
        max_tokens=50,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    call = tool.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    # 3 requests: (4 + 6) + (4 + 6) + (3 + 5) tokens at 3 / 15 USD per 1K
    spent = (Decimal(4 + 4 + 3) * 3 + Decimal(6 + 6 + 5) * 15) / 1000
    body = wait_for_balance(mesh, s.token, Decimal(5) - spent)
    assert Decimal(body["balance_usd"]) == Decimal(5) - spent
    assert "sk-ant-secret" not in mesh.output()


def test_the_openai_sdk_talks_to_a_gemini_model(gemini_mesh):
    mesh, fake = gemini_mesh
    s = funded_key(mesh, "1", label="gemini")
    key = s.key
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    messages = [{"role": "user", "content": "say five words"}]
    plain = client.chat.completions.create(model="google/flash", messages=messages)
    assert plain.choices[0].message.content == "g0 g1 g2 g3 g4" and plain.usage.prompt_tokens == 3
    streamed = list(client.chat.completions.create(model="google/flash", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "g0 g1 g2 g3 g4"
    assert fake.requests[-1]["_model"] == "gemini-test"
    assert "maxOutputTokens" not in fake.requests[-1].get("generationConfig", {})  # no limit added
    spent = (Decimal(3 + 3) * Decimal("0.1") + Decimal(5 + 5) * Decimal("0.4")) / 1000
    body = wait_for_balance(mesh, s.token, Decimal(1) - spent)
    assert Decimal(body["balance_usd"]) == Decimal(1) - spent
