"""Retries and fallbacks through `mesh up`: a model that fails before answering is retried, then its fallback
(mesh.toml's `fallbacks`, or the request's own `models`) serves the request, which is billed once, at the price
of the model that answered, with every attempt in its log entry. A bad request is not retried, nor a stream that
had begun."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import funded_key, own_mesh, stored_events
from tests.e2e.test_dashboard import chromium, shot, signed_in
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import BackgroundServer
from tests.e2e.test_walking_skeleton import api, stream_head, wait_for_balance

PRICES = {"acme/main": ("0.5", "1.5"), "acme/plain": ("0.5", "1.5"), "backup/big": ("2", "4")}
REPLY_WORDS = 7


@pytest.fixture(scope="module")
def primary():
    fake = FakeOpenAI(reply_words=REPLY_WORDS)
    with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def backup():
    fake = FakeOpenAI(reply_words=REPLY_WORDS)
    with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def claudes():
    """Two Anthropic upstreams: the first serves claude/main, the second claude/backup."""
    fakes = (FakeAnthropic(), FakeAnthropic())
    with BackgroundServer(fakes[0]) as first, BackgroundServer(fakes[1]) as second:
        fakes[0].url, fakes[1].url = first.url, second.url
        yield fakes


CLAUDE_MODELS = """
[[models]]
id = "claude/main"
provider = "claude"
upstream = "claude-sonnet-4-5"
prompt_usd_per_1k = "3"
completion_usd_per_1k = "15"
max_output_tokens = 1024
fallbacks = ["backup/big", "claude/backup"]

[[models]]
id = "claude/backup"
provider = "claude2"
upstream = "claude-haiku-4-5"
prompt_usd_per_1k = "1"
completion_usd_per_1k = "5"
max_output_tokens = 1024
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, primary, backup, claudes):
    config = tmp_path_factory.mktemp("fallbacks") / "mesh.toml"
    models = "".join(
        f"""
[[models]]
id = "{model}"
provider = "{model.split("/")[0]}"
upstream = "{model.split("/")[1]}"
prompt_usd_per_1k = "{prompt}"
completion_usd_per_1k = "{completion}"
max_output_tokens = 256
{'fallbacks = ["backup/big"]' if model == "acme/main" else ""}
"""
        for model, (prompt, completion) in PRICES.items()
    )
    config.write_text(
        f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{primary.url}/v1"

[providers.backup]
kind = "openai-compatible"
base_url = "{backup.url}/v1"

[providers.claude]
kind = "anthropic"
base_url = "{claudes[0].url}/v1"

[providers.claude2]
kind = "anthropic"
base_url = "{claudes[1].url}/v1"
"""
        + models
        + CLAUDE_MODELS
    )
    with own_mesh(tmp_path_factory, config, "fallbacks-mesh", {}) as process:
        yield process


@pytest.fixture(autouse=True)
def upstreams_answer(primary, backup):
    yield
    for fake in (primary, backup):
        fake.fail_with = fake.fail_times = None
        fake.fail_headers = []
        fake.fail_mid_stream = None


def cost(model: str, prompt: int, completion: int) -> Decimal:
    p, c = (Decimal(x) for x in PRICES[model])
    return (prompt * p + completion * c) / 1000


def entry(mesh, token: str, trace: str) -> dict:
    deadline = time.monotonic() + 15
    while (found := api(mesh, "GET", f"/api/logs/{trace}", token)).status_code == 404:
        assert time.monotonic() < deadline, f"{trace} not in the logs"
        time.sleep(0.1)
    return found.json()


def usage_events(mesh, position: int) -> list[dict]:
    return [json.loads(data) for topic, data in stored_events(mesh, position) if topic == "usage.recorded"]


def test_a_model_answering_503_is_served_by_its_fallback_billed_once_at_the_fallbacks_price(mesh, primary, backup):
    _, token, _, key = funded_key(mesh, "10")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)
    primary.fail_with = (503, "the server is overloaded")
    asked_primary, asked_backup = len(primary.requests), len(backup.requests)
    position = stream_head(mesh)
    raw = client.chat.completions.with_raw_response.create(
        model="acme/main", messages=[{"role": "user", "content": "hello there"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == " ".join(f"w{i}" for i in range(REPLY_WORDS))
    assert len(primary.requests) - asked_primary == 2  # tried twice
    assert len(backup.requests) - asked_backup == 1
    assert backup.requests[-1]["model"] == "big"
    logged = entry(mesh, token, raw.headers["x-mesh-trace-id"])
    assert (logged["model"], logged["requested_model"], logged["provider"]) == ("backup/big", "acme/main", "backup")
    assert [(a["model"], a["status"]) for a in logged["attempts"]] == [
        ("acme/main", 502),
        ("acme/main", 502),
        ("backup/big", 200),
    ]
    expected = cost("backup/big", answer.usage.prompt_tokens, answer.usage.completion_tokens)
    assert Decimal(logged["cost_usd"]) == expected
    events = usage_events(mesh, position)
    assert len(events) == 1 and events[0]["model"] == "backup/big"  # billed once
    assert Decimal(wait_for_balance(mesh, token, Decimal("10") - expected)["balance_usd"]) == Decimal("10") - expected


def test_every_front_door_falls_back(mesh, primary, backup):
    _, token, _, key = funded_key(mesh, "10")
    primary.fail_with = (500, "internal error")
    headers = {"authorization": f"Bearer {key['key']}"}
    for path, body in (
        ("/v1/responses", {"model": "acme/main", "input": "hello"}),
        ("/v1/messages", {"model": "acme/main", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
        (
            "/v1/chat/completions",
            {"model": "acme/main", "stream": True, "messages": [{"role": "user", "content": "x"}]},
        ),
    ):
        answered = http_calls.post(mesh.url + path, headers=headers, json=body, timeout=30)
        assert answered.status_code == 200, (path, answered.text)
        logged = entry(mesh, token, answered.headers["x-mesh-trace-id"])
        assert logged["model"] == "backup/big" and len(logged["attempts"]) == 3, (path, logged)


def test_a_429_is_retried_on_the_same_model_after_its_retry_after(mesh, primary, backup):
    _, token, _, key = funded_key(mesh, "10")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)
    primary.fail_with, primary.fail_times = (429, "Rate limit reached"), 1
    primary.fail_headers = [(b"retry-after", b"0.3")]
    asked_backup = len(backup.requests)
    began = time.monotonic()
    raw = client.chat.completions.with_raw_response.create(
        model="acme/plain", messages=[{"role": "user", "content": "again"}]
    )
    assert time.monotonic() - began >= 0.3  # the upstream's Retry-After was waited for
    raw.parse()
    logged = entry(mesh, token, raw.headers["x-mesh-trace-id"])
    assert logged["model"] == "acme/plain" and logged["status"] == "success"
    assert [(a["model"], a["status"]) for a in logged["attempts"]] == [("acme/plain", 429), ("acme/plain", 200)]
    assert len(backup.requests) == asked_backup


def test_a_bad_request_is_not_retried(mesh, primary, backup):
    _, token, _, key = funded_key(mesh, "10")
    primary.fail_with = (400, "This model's maximum context length is 16 tokens")
    asked_primary, asked_backup = len(primary.requests), len(backup.requests)
    answered = http_calls.post(
        mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key['key']}"},
        json={"model": "acme/main", "messages": [{"role": "user", "content": "too long"}]},
        timeout=30,
    )
    assert answered.status_code == 400 and "maximum context length" in answered.json()["error"]["message"]
    assert len(primary.requests) - asked_primary == 1 and len(backup.requests) == asked_backup
    logged = entry(mesh, token, answered.headers["x-mesh-trace-id"])
    assert (logged["model"], logged["http_status"], logged["attempts"]) == ("acme/main", 400, [])


def test_a_stream_that_began_is_never_retried(mesh, primary, backup):
    _, token, _, key = funded_key(mesh, "10")
    primary.fail_mid_stream = "the server had an error while processing your request"
    asked_primary, asked_backup = len(primary.requests), len(backup.requests)
    with http_calls.stream(
        "POST",
        mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key['key']}"},
        json={"model": "acme/main", "stream": True, "messages": [{"role": "user", "content": "go on"}]},
        timeout=30,
    ) as streamed:
        assert streamed.status_code == 200
        trace = streamed.headers["x-mesh-trace-id"]
        with pytest.raises(httpx.RemoteProtocolError):  # the answer had begun: it ends there
            streamed.read()
    assert len(primary.requests) - asked_primary == 1 and len(backup.requests) == asked_backup
    logged = entry(mesh, token, trace)
    assert (logged["model"], logged["status"], logged["attempts"]) == ("acme/main", "error", [])
    assert logged["estimated"] and Decimal(logged["cost_usd"]) > 0  # billed as any broken stream: estimated


def test_the_requests_own_models_list_replaces_the_fallbacks_and_is_checked_against_the_key(mesh, primary, backup):
    _, token, _, key = funded_key(mesh, "10", allowed_models=["acme/main", "acme/plain"])
    headers = {"authorization": f"Bearer {key['key']}"}
    primary.fail_with, primary.fail_times = (503, "overloaded"), 2  # acme/main's two attempts
    asked_backup = len(backup.requests)
    answered = http_calls.post(
        mesh.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "acme/main", "models": ["acme/plain"], "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert answered.status_code == 200, answered.text
    logged = entry(mesh, token, answered.headers["x-mesh-trace-id"])
    assert logged["model"] == "acme/plain" and [a["model"] for a in logged["attempts"]] == [
        "acme/main",
        "acme/main",
        "acme/plain",
    ]
    assert len(backup.requests) == asked_backup  # the model's own fallback was not used
    position = stream_head(mesh)
    for models, code in ((["backup/big"], "model_not_allowed"), (["nope/none"], "model_not_found")):
        refused = http_calls.post(
            mesh.url + "/v1/chat/completions",
            headers=headers,
            json={"model": "acme/main", "models": models, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert (error["param"], error["code"]) == ("models", code) and models[0] in error["message"]
    too_many = http_calls.post(
        mesh.url + "/v1/chat/completions",
        headers=headers,
        json={"model": "acme/main", "models": ["acme/plain"] * 6, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert too_many.status_code == 400 and "at most 5" in too_many.json()["error"]["message"]
    assert usage_events(mesh, position) == []  # refusals cost nothing


def test_the_reservation_covers_the_costliest_candidate(mesh, primary):
    """A balance that covers the model's worst case but not its fallback's is refused up front (402)."""
    _, _, _, key = funded_key(mesh, "0.3")
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    headers = {"authorization": f"Bearer {key['key']}"}
    # acme/main costs at most 0.15 USD for 100 tokens (1.5/1K) and its prompt; backup/big, its fallback, 0.4 and more
    with_fallback = http_calls.post(
        mesh.url + "/v1/chat/completions", headers=headers, json={**body, "model": "acme/main"}
    )
    assert with_fallback.status_code == 402, with_fallback.text
    assert "this request can cost up to 0.508" in with_fallback.json()["error"]["message"]  # 54 x 2/1K + 0.4
    plain = http_calls.post(mesh.url + "/v1/chat/completions", headers=headers, json={**body, "model": "acme/plain"})
    assert plain.status_code == 200, plain.text


def test_the_dashboards_request_page_lists_every_attempt(mesh, primary):
    _, token, _, key = funded_key(mesh, "10")
    primary.fail_with = (503, "overloaded")
    answered = http_calls.post(
        mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key['key']}"},
        json={"model": "acme/main", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    trace = answered.headers["x-mesh-trace-id"]
    entry(mesh, token, trace)
    with chromium() as browser, signed_in(browser, mesh, token) as page:
        page.goto(f"/logs/{trace}")
        rows = page.locator("#attempts tbody tr")
        assert rows.count() == 3
        cells = [rows.nth(n).locator("td").all_inner_texts() for n in range(3)]
        assert [(c[1], c[2]) for c in cells] == [("acme/main", "502"), ("acme/main", "502"), ("backup/big", "200")]
        shot(page, "log-attempts")


def test_messages_passed_through_fall_back_to_anthropic_models_only(mesh, backup, claudes):
    """/v1/messages to an Anthropic-kind model goes as sent: its fallbacks of another kind (which would need the
    body translated) are skipped."""
    _, token, _, key = funded_key(mesh, "10")
    first, second = claudes
    first.fail_with = (529, "overloaded_error", "Overloaded")
    asked_backup = len(backup.requests)
    try:
        answered = http_calls.post(
            mesh.url + "/v1/messages",
            headers={"x-api-key": key["key"], "anthropic-version": "2023-06-01"},
            json={"model": "claude/main", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
    finally:
        first.fail_with = None
    assert answered.status_code == 200, answered.text
    assert answered.json()["type"] == "message" and second.requests[-1]["model"] == "claude-haiku-4-5"
    assert len(backup.requests) == asked_backup  # backup/big (openai-compatible) was not tried
    logged = entry(mesh, token, answered.headers["x-mesh-trace-id"])
    assert logged["model"] == "claude/backup" and logged["api"] == "messages"
    assert [(a["model"], a["status"]) for a in logged["attempts"]] == [
        ("claude/main", 502),
        ("claude/main", 502),
        ("claude/backup", 200),
    ]
    usage = answered.json()["usage"]
    assert Decimal(logged["cost_usd"]) == (usage["input_tokens"] * 1 + usage["output_tokens"] * 5) / Decimal(1000)
