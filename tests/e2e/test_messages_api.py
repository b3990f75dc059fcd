"""Anthropic's Messages API through Mesh (POST /v1/messages), with the official anthropic SDK and Claude Code's own
request: passed through to an Anthropic upstream, translated for an OpenAI-compatible one; billed and logged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from decimal import Decimal

import httpx
import pytest

from tests import http_calls
from tests.e2e.conftest import MeshProcess, funded_key
from tests.e2e.test_walking_skeleton import wait_for_balance
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import BackgroundServer

CLAUDE = {"prompt": Decimal(3), "completion": Decimal(15), "cached": Decimal("0.3"), "write": Decimal("3.75")}
GPT = {"prompt": Decimal("0.5"), "completion": Decimal("1.5")}
CLAUDE_CODE_BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,"
    "context-management-2025-06-27,prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,"
    "effort-2025-11-24"
)


@pytest.fixture(scope="module")
def messages_mesh(tmp_path_factory):
    """One Mesh with a Claude model (on a fake Anthropic upstream) and two OpenAI-compatible ones (on a fake OpenAI
    upstream), one of which drops cache_control and context_management: (the Mesh, the Anthropic fake, the
    OpenAI fake)."""
    claude, gpt = FakeAnthropic(reply_words=6, api_key="sk-ant-secret"), FakeOpenAI(reply_words=7)
    with BackgroundServer(claude) as claude_server, BackgroundServer(gpt) as gpt_server:
        base = tmp_path_factory.mktemp("messages")
        config = base / "mesh.toml"
        config.write_text(f"""
[providers.claude]
kind = "anthropic"
base_url = "{claude_server.url}/v1"
api_key_env = "ANTHROPIC_TEST_KEY"

[providers.acme]
kind = "openai-compatible"
base_url = "{gpt_server.url}/v1"

[[models]]
id = "claude/sonnet"
provider = "claude"
upstream = "claude-sonnet-4-5-20250929"
prompt_usd_per_1k = "3"
completion_usd_per_1k = "15"
cached_prompt_usd_per_1k = "0.3"
cache_write_usd_per_1k = "3.75"
max_output_tokens = 64000
aliases = ["claude-sonnet-4-5"]

[[models]]
id = "acme/gpt"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 256
ignore_fields = ["cache_control", "context_management"]

[[models]]
id = "acme/strict"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 256
""")
        mesh = MeshProcess(base / "data", config, {"ANTHROPIC_TEST_KEY": "sk-ant-secret"})
        mesh.start()
        yield mesh, claude, gpt
        mesh.stop()


def claude_cost(prompt: int, completion: int, cached: int = 0, written: int = 0) -> Decimal:
    uncached = prompt - cached - written
    return (
        uncached * CLAUDE["prompt"]
        + cached * CLAUDE["cached"]
        + written * CLAUDE["write"]
        + completion * CLAUDE["completion"]
    ) / 1000


def gpt_cost(prompt: int, completion: int) -> Decimal:
    return (prompt * GPT["prompt"] + completion * GPT["completion"]) / 1000


def logged(mesh: MeshProcess, token: str, n: int) -> list[dict]:
    """The account's newest `n` log entries, oldest first, once all are there."""
    import time

    deadline = time.monotonic() + 15
    while True:
        entries = http_calls.get(mesh.url + "/api/logs", headers={"authorization": f"Bearer {token}"}).json()["data"]
        if len(entries) >= n or time.monotonic() > deadline:
            return list(reversed(entries[:n]))
        time.sleep(0.05)


def anthropic_sdk(mesh: MeshProcess, key: str):
    """The official anthropic SDK on Mesh, sending `key` as x-api-key as the SDK does. Imported here rather than at the
    top: the SDK takes about a second to import, which every test worker would otherwise pay while collecting."""
    import anthropic

    return anthropic.Anthropic(base_url=mesh.url, api_key=key, max_retries=0)


def test_the_anthropic_sdk_passes_through_to_an_anthropic_model(messages_mesh):
    mesh, fake, _ = messages_mesh
    s = funded_key(mesh, "5", label="claude")
    client = anthropic_sdk(mesh, s.key)
    plain = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=50,
        system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert plain.content[0].text == "a0 a1 a2 a3 a4 a5" and plain.stop_reason == "end_turn"
    assert (plain.usage.input_tokens, plain.usage.output_tokens) == (4, 6)
    sent = fake.requests[-1]
    assert sent["model"] == "claude-sonnet-4-5-20250929"  # the alias resolved to the upstream's name
    assert sent["system"] == [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}]
    assert fake.headers[-1]["x-api-key"] == "sk-ant-secret"  # Mesh's own key for the provider, not the client's
    assert fake.headers[-1]["anthropic-version"] == client.default_headers["anthropic-version"]  # as the SDK sent it

    with client.messages.stream(
        model="claude/sonnet", max_tokens=50, messages=[{"role": "user", "content": "hello there"}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "a0 a1 a2 a3 a4 a5" and final.usage.output_tokens == 6
    # passed through, the answer names the Mesh id and states its charge all the same (gateway/answer_fields.py)
    assert plain.model == final.model == "claude/sonnet"
    assert Decimal(plain.usage.model_extra["cost_usd"]) == claude_cost(4, 6)
    (delta,) = [e for e in events if e.type == "message_delta"]
    assert Decimal(delta.usage.model_extra["cost_usd"]) == claude_cost(2, 6)

    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}]
    called = client.messages.create(
        model="claude/sonnet", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather in Paris?"}]
    )
    use = called.content[0]
    assert called.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    answered = client.messages.create(
        model="claude/sonnet",
        max_tokens=50,
        tools=tools,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )
    assert answered.content[0].text == "a0 a1 a2 a3 a4 a5"
    # (4 + 6), (2 + 6), (3 + 5), (4 + 6) tokens (the fake counts system and message words)
    costs = [claude_cost(4, 6), claude_cost(2, 6), claude_cost(3, 5), claude_cost(4, 6)]
    entries = logged(mesh, s.token, 4)
    assert [Decimal(e["cost_usd"]) for e in entries] == costs
    assert {e["api"] for e in entries} == {"messages"} and [e["stream"] for e in entries] == [False, True, False, False]
    assert entries[0]["requested_model"] == "claude-sonnet-4-5" and entries[0]["model"] == "claude/sonnet"
    body = wait_for_balance(mesh, s.token, Decimal(5) - sum(costs))
    assert Decimal(body["balance_usd"]) == Decimal(5) - sum(costs)
    assert "sk-ant-secret" not in mesh.output()


def test_thinking_passes_through_and_cache_tokens_bill_at_cache_prices(messages_mesh):
    mesh, fake, _ = messages_mesh
    s = funded_key(mesh, "50", label="cache")
    client = anthropic_sdk(mesh, s.key)
    fake.thinking_tokens, fake.cache_read, fake.cache_write = 3, 5, 2
    try:
        thinking = {"type": "enabled", "budget_tokens": 1024}
        system = [
            {"type": "text", "text": "one two three four five six seven eight", "cache_control": {"type": "ephemeral"}}
        ]
        message = client.messages.create(
            model="claude/sonnet",
            max_tokens=1100,
            thinking=thinking,
            system=system,
            messages=[{"role": "user", "content": "hello there"}],
        )
        with client.messages.stream(
            model="claude/sonnet",
            max_tokens=1100,
            thinking=thinking,
            system=system,
            messages=[{"role": "user", "content": "hello there"}],
        ) as stream:
            streamed = stream.get_final_message()
    finally:
        fake.thinking_tokens, fake.cache_read, fake.cache_write = 0, 0, 0
    assert fake.requests[-1]["thinking"] == thinking and fake.requests[-2]["thinking"] == thinking
    for answer in (message, streamed):
        assert [b.type for b in answer.content] == ["thinking", "text"] and answer.content[0].thinking == "t0 t1 t2"
        assert (answer.usage.cache_read_input_tokens, answer.usage.cache_creation_input_tokens) == (5, 2)
        assert (answer.usage.input_tokens, answer.usage.output_tokens) == (3, 9)
    # a prompt of 10 tokens: 5 read from the cache, 2 written to it, 3 plain; 6 words and 3 thinking tokens out
    cost = claude_cost(10, 9, cached=5, written=2)
    entries = logged(mesh, s.token, 2)
    for entry in entries:
        assert (entry["prompt_tokens"], entry["cached_prompt_tokens"], entry["cache_write_tokens"]) == (10, 5, 2)
        assert Decimal(entry["cost_usd"]) == cost
    assert Decimal(wait_for_balance(mesh, s.token, Decimal(50) - 2 * cost)["balance_usd"]) == Decimal(50) - 2 * cost


def claude_code_request() -> dict:
    """The body Claude Code 2.1.197 sends for `claude -p "say hi"` (the issue's observation)."""
    schema = {"type": "object", "properties": {"x": {"type": "string"}}, "required": ["x"]}
    tools = [{"name": f"Tool{n}", "description": f"tool {n}", "input_schema": schema} for n in range(23)]
    tools.insert(5, {"name": "WebSearch", "description": "search the web", "input_schema": schema})
    return {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "say hi"}]}],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197"},
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Environment: linux", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        ],
        "tools": tools,
        "metadata": {"user_id": "user_abc_account_def_session_123"},
        "max_tokens": 32000,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": True,
    }


def test_claude_codes_request_passes_through_unchanged_and_is_billed(messages_mesh):
    mesh, fake, _ = messages_mesh
    s = funded_key(mesh, "500", label="claude code")  # its max_tokens of 32,000 reserves 480 USD
    body = claude_code_request()
    headers = {
        "x-api-key": s.key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": CLAUDE_CODE_BETAS,
        "content-type": "application/json",
    }
    events = []
    with http_calls.stream("POST", mesh.url + "/v1/messages?beta=true", json=body, headers=headers, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
    assert fake.requests[-1] == {**body, "model": "claude-sonnet-4-5-20250929"}  # all of it, as sent
    assert fake.headers[-1]["anthropic-beta"] == CLAUDE_CODE_BETAS and fake.queries[-1] == "beta=true"
    assert [e["type"] for e in events][0] == "message_start" and events[-1]["type"] == "message_stop"
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    assert text == "a0 a1 a2 a3 a4 a5"
    # the fake counts the words of the system blocks and the message: 2 + 4 + 2 + 2
    [entry] = logged(mesh, s.token, 1)
    assert (entry["prompt_tokens"], entry["completion_tokens"], entry["api"]) == (10, 6, "messages")
    assert Decimal(entry["cost_usd"]) == claude_cost(10, 6)
    left = Decimal(500) - claude_cost(10, 6)
    assert Decimal(wait_for_balance(mesh, s.token, left)["balance_usd"]) == left


def test_the_anthropic_sdk_is_translated_for_an_openai_compatible_model(messages_mesh):
    mesh, _, fake = messages_mesh
    s = funded_key(mesh, "5", label="gpt")
    client = anthropic_sdk(mesh, s.key)
    plain = client.messages.create(
        model="acme/gpt",
        max_tokens=50,
        system="be brief",
        stop_sequences=["zzz"],
        metadata={"user_id": "u-1"},
        messages=[{"role": "user", "content": "hello there"}],
    )
    assert plain.content[0].text == "w0 w1 w2 w3 w4 w5 w6" and plain.stop_reason == "end_turn"
    assert plain.model == "acme/gpt" and (plain.usage.input_tokens, plain.usage.output_tokens) == (4, 7)
    sent = fake.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    assert (sent["stop"], sent["user"], sent["max_tokens"]) == (["zzz"], "u-1", 50)

    assert Decimal(plain.usage.model_extra["cost_usd"]) == gpt_cost(4, 7)  # the charge, in the answer

    with client.messages.stream(
        model="acme/gpt", max_tokens=50, messages=[{"role": "user", "content": "hello there"}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == "w0 w1 w2 w3 w4 w5 w6" and (final.usage.input_tokens, final.usage.output_tokens) == (2, 7)
    (delta,) = [e for e in events if e.type == "message_delta"]
    assert Decimal(delta.usage.model_extra["cost_usd"]) == gpt_cost(2, 7)

    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}]
    called = client.messages.create(
        model="acme/gpt", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather in Paris?"}]
    )
    use = called.content[0]
    assert called.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    with client.messages.stream(
        model="acme/gpt", max_tokens=50, tools=tools, messages=[{"role": "user", "content": "weather in Paris?"}]
    ) as stream:
        streamed_call = stream.get_final_message()
    assert streamed_call.content[0].input == {"city": "Paris"} and streamed_call.stop_reason == "tool_use"
    answered = client.messages.create(
        model="acme/gpt",
        max_tokens=50,
        tools=tools,
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ],
    )
    assert answered.content[0].text == "w0 w1 w2 w3 w4 w5 w6"
    assert fake.requests[-1]["messages"][1]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert fake.requests[-1]["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": "sunny"}
    costs = [gpt_cost(4, 7), gpt_cost(2, 7), gpt_cost(3, 5), gpt_cost(3, 5), gpt_cost(4, 7)]
    entries = logged(mesh, s.token, 5)
    assert [Decimal(e["cost_usd"]) for e in entries] == costs and {e["api"] for e in entries} == {"messages"}
    assert Decimal(wait_for_balance(mesh, s.token, Decimal(5) - sum(costs))["balance_usd"]) == Decimal(5) - sum(costs)


def test_fields_without_an_equivalent_are_refused_or_dropped_as_the_operator_says(messages_mesh):
    mesh, _, fake = messages_mesh
    s = funded_key(mesh, "5", label="fields")
    body = {
        "max_tokens": 20,
        "context_management": {"edits": []},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}
        ],
    }
    refused = http_calls.post(
        mesh.url + "/v1/messages", json={**body, "model": "acme/strict"}, headers={"x-api-key": s.key}
    )
    assert refused.status_code == 400
    error = refused.json()
    assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    assert "'cache_control'" in error["error"]["message"] and "ignore_fields" in error["error"]["message"]
    dropped = http_calls.post(
        mesh.url + "/v1/messages", json={**body, "model": "acme/gpt"}, headers={"x-api-key": s.key}
    )
    assert dropped.status_code == 200, dropped.text
    assert dropped.headers["x-mesh-ignored-fields"] == "cache_control,context_management"
    assert "context_management" not in fake.requests[-1]
    [entry] = logged(mesh, s.token, 1)  # only the answered request is billed
    assert Decimal(entry["cost_usd"]) == gpt_cost(1, 7)


def test_refusals_come_in_anthropics_error_shape(messages_mesh):
    mesh, _, _ = messages_mesh
    body = {"model": "acme/gpt", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    missing = http_calls.post(mesh.url + "/v1/messages", json=body)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    wrong = http_calls.post(mesh.url + "/v1/messages", json=body, headers={"x-api-key": "mk-nope"})
    assert wrong.status_code == 401 and wrong.json()["type"] == "error"
    poor = funded_key(mesh, "0.0001", label="poor")
    claude = {**body, "model": "claude/sonnet", "max_tokens": 32000}
    broke = http_calls.post(mesh.url + "/v1/messages", json=claude, headers={"authorization": f"Bearer {poor.key}"})
    assert broke.status_code == 402 and broke.json()["error"]["type"] == "billing_error"
    assert "does not cover" in broke.json()["error"]["message"]
    templated = http_calls.post(
        mesh.url + "/v1/messages", json={**body, "template": "t"}, headers={"x-api-key": poor.key}
    )
    assert templated.status_code == 400 and "chat/completions" in templated.json()["error"]["message"]
    server_tool = {**claude, "max_tokens": 10, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    priced = http_calls.post(mesh.url + "/v1/messages", json=server_tool, headers={"x-api-key": poor.key})
    assert priced.status_code == 400 and "web_search_20250305" in priced.json()["error"]["message"]


def test_count_tokens(messages_mesh):
    mesh, fake, _ = messages_mesh
    s = funded_key(mesh, "1", label="count")
    client = anthropic_sdk(mesh, s.key)
    counted = client.messages.count_tokens(
        model="claude/sonnet", system="be brief", messages=[{"role": "user", "content": "hello there"}]
    )
    assert counted.input_tokens == 4 and fake.requests[-1]["model"] == "claude-sonnet-4-5-20250929"
    estimated = client.messages.with_raw_response.count_tokens(
        model="acme/gpt", messages=[{"role": "user", "content": "hello there"}]
    )
    assert estimated.headers["x-mesh-estimated"] == "true" and estimated.parse().input_tokens >= 2


def test_an_upstream_failing_mid_stream_reaches_the_client_as_its_error_event_and_is_logged(messages_mesh):
    mesh, fake, _ = messages_mesh
    s = funded_key(mesh, "5", label="mid-stream")
    body = {"model": "claude/sonnet", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    fake.fail_mid_stream = "Overloaded"
    events = []
    try:
        with http_calls.stream("POST", mesh.url + "/v1/messages", json=body, headers={"x-api-key": s.key}) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
    except httpx.RemoteProtocolError:  # the answer had begun: it ends there
        pass
    finally:
        fake.fail_mid_stream = None
    assert events[-1] == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    [entry] = logged(mesh, s.token, 1)
    assert entry["status"] == "error" and entry["api"] == "messages" and entry["estimated"]


CLAUDE_CODE = os.environ.get("MESH_TEST_CLAUDE_CODE") or shutil.which("claude")  # the real CLI, when installed


@pytest.mark.skipif(CLAUDE_CODE is None, reason="Claude Code is not installed (npm i @anthropic-ai/claude-code)")
def test_the_real_claude_code_cli_runs_headless_through_mesh(messages_mesh, tmp_path):
    mesh, fake, _ = messages_mesh
    s = funded_key(mesh, "1000", label="claude code cli")  # its prompt (about 100 KB) and max_tokens 32,000
    before = len(fake.requests)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": mesh.url,
        "ANTHROPIC_API_KEY": s.key,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    run = subprocess.run(
        [CLAUDE_CODE, "-p", "say hi", "--model", "claude-sonnet-4-5"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "a0 a1 a2 a3 a4 a5" in run.stdout
    asked = fake.requests[before:]
    assert asked and all(r["model"] == "claude-sonnet-4-5-20250929" for r in asked)
    assert all("claude-code-20250219" in h["anthropic-beta"] for h in fake.headers[before:])  # its betas, forwarded
    entries = logged(mesh, s.token, len(asked))
    assert len(entries) == len(asked) and {e["api"] for e in entries} == {"messages"}
