"""Request logs through `mesh up` with the openai SDK: every call findable with exact tokens, cost, latency and
trace id; filters, cursor pages and the export agree; accounts never see each other's; a rebuild of the logs
leaves money alone."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests.e2e.conftest import MeshProcess, funded_key
from tests.e2e.test_walking_skeleton import api, sign_up, wait_for_balance

PRICES = {"acme/small": (Decimal("0.5"), Decimal("1.5")), "acme/large": (Decimal("2"), Decimal("4"))}
UPSTREAM_REPLY_WORDS = 7  # the words of each reply of the `upstream` fixture (tests/e2e/conftest.py)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, upstream):
    base = tmp_path_factory.mktemp("logs")
    config = base / "mesh.toml"
    config.write_text(
        f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{upstream.url}/v1"
"""
        + "".join(
            f"""
[[models]]
id = "{model}"
provider = "acme"
upstream = "{model.split("/")[1]}"
prompt_usd_per_1k = "{prompt}"
completion_usd_per_1k = "{completion}"
"""
            for model, (prompt, completion) in PRICES.items()
        )
    )
    process = MeshProcess(base / "data", config)
    process.start()
    yield process
    process.stop()


def now() -> str:
    moment = datetime.now(timezone.utc).isoformat()
    time.sleep(0.02)
    return moment


def cost(model: str, prompt: int, completion: int) -> Decimal:
    p, c = PRICES[model]
    return (prompt * p + completion * c) / 1000


def logs(mesh, token: str, path: str = "/api/logs", **params):
    r = api(mesh, "GET", path, token, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def every_page(mesh, token: str, limit: int, **params) -> list[dict]:
    entries, cursor = [], None
    while True:
        page = logs(mesh, token, limit=limit, **({"cursor": cursor} if cursor else {}), **params)
        assert len(page["data"]) <= limit and page["as_of"]["position"] > 0
        entries += page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


def test_every_call_is_logged_exactly_and_found_by_every_filter(mesh, upstream):
    account_id, token, _, key = funded_key(mesh, "1000", label="logged")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)
    expected: dict[str, dict] = {}

    def call(model: str, text: str, fail: int | None = None) -> None:
        upstream.fail_with = (fail, "the upstream says no") if fail else None
        messages = [{"role": "user", "content": text}]
        try:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
            trace, status = raw.headers["x-mesh-trace-id"], 200
        except openai.APIStatusError as exc:
            trace, status = exc.response.headers["x-mesh-trace-id"], exc.status_code
        finally:
            upstream.fail_with = None
        # a refusal bills nothing
        prompt, completion = (len(text.split()), UPSTREAM_REPLY_WORDS) if not fail else (0, 0)
        expected[trace] = {
            "model": model,
            "status": "error" if fail else "success",
            "http_status": status,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost": cost(model, prompt, completion) if not fail else Decimal(0),
        }

    start = now()
    call("acme/small", "one")
    call("acme/small", "one two")
    call("acme/large", "one two three")
    middle = now()
    call("acme/large", "four five", fail=500)
    call("acme/small", "six", fail=429)
    call("acme/large", "seven eight nine ten")
    end = now()

    deadline = time.monotonic() + 15
    while len(logs(mesh, token)["data"]) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.1)
    entries = logs(mesh, token)["data"]
    assert [e["trace_id"] for e in entries] == list(reversed(expected))  # newest first, each once
    for entry in entries:
        wanted = expected[entry["trace_id"]]
        assert {k: entry[k] for k in ("model", "status", "http_status", "prompt_tokens", "completion_tokens")} == {
            k: wanted[k] for k in ("model", "status", "http_status", "prompt_tokens", "completion_tokens")
        }
        assert Decimal(entry["cost_usd"]) == wanted["cost"]
        assert (entry["key_id"], entry["key_label"], entry["provider"]) == (key["id"], "logged", "acme")
        latency = entry["latency_ms"]
        assert 0 < latency["total"] and latency["first_token"] is None
        assert (0 < latency["upstream"] <= latency["total"]) == (wanted["status"] == "success")
        assert entry["template"] is None and entry["stream"] is False and entry["estimated"] is False
        assert (entry["error"] is not None) == (wanted["status"] == "error")
    spent = sum(w["cost"] for w in expected.values())
    assert Decimal(wait_for_balance(mesh, token, 1000 - spent)["balance_usd"]) == 1000 - spent

    def traces(**params) -> list[str]:
        return [e["trace_id"] for e in every_page(mesh, token, 50, **params)]

    newest_first = list(reversed(expected))
    assert traces(status="error") == [t for t in newest_first if expected[t]["status"] == "error"]
    assert traces(status="success") == [t for t in newest_first if expected[t]["status"] == "success"]
    assert traces(model="acme/large") == [t for t in newest_first if expected[t]["model"] == "acme/large"]
    assert traces(**{"from": middle}) == newest_first[:3] and traces(**{"to": middle}) == newest_first[3:]
    assert traces(**{"from": start, "to": end}) == newest_first
    assert traces(key_id=key["id"], provider="acme") == newest_first
    assert traces(min_latency_ms=10**6) == []
    assert [e["trace_id"] for e in every_page(mesh, token, 2)] == newest_first  # cursor pages: each once

    one = api(mesh, "GET", f"/api/logs/{newest_first[0]}", token)
    assert one.status_code == 200 and one.json()["trace_id"] == newest_first[0] and one.json()["as_of"]["position"]
    detail = {k: v for k, v in one.json().items() if k not in ("as_of", "request", "response", "bodies_truncated")}
    assert detail == entries[0]
    assert one.json()["request"] is None and one.json()["response"] is None  # MESH_LOG_BODIES is off

    jsonl = api(mesh, "GET", "/api/logs/export", token, params={"format": "jsonl"})
    assert jsonl.status_code == 200 and jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in jsonl.text.splitlines()] == entries
    exported = list(
        csv.DictReader(
            io.StringIO(api(mesh, "GET", "/api/logs/export", token, params={"format": "csv", "status": "error"}).text)
        )
    )
    assert [row["trace_id"] for row in exported] == traces(status="error")
    assert [Decimal(row["cost_usd"]) for row in exported] == [Decimal(0), Decimal(0)]

    _, stranger = sign_up(mesh)
    assert logs(mesh, stranger)["data"] == []
    assert api(mesh, "GET", f"/api/logs/{newest_first[0]}", stranger).status_code == 404
    assert api(mesh, "GET", "/api/logs/export", stranger).text == ""
    operator = logs(mesh, mesh.operator_token, "/admin/logs", account_id=account_id)
    assert [e["trace_id"] for e in operator["data"]] == newest_first
    assert all(e["account_id"] == account_id for e in operator["data"])
    assert api(mesh, "GET", "/admin/logs", token).status_code == 403
    assert api(mesh, "GET", "/api/logs", mesh.operator_token).status_code == 401


@pytest.mark.parametrize(
    "params, param",
    [
        ({"status": "failed"}, "status"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"from": "yesterday"}, "from"),
        ({"to": "2026-01-01T00:00:00"}, "to"),
        ({"key_id": "k1"}, "key_id"),
        ({"min_latency_ms": "-5"}, "min_latency_ms"),
        ({"cursor": "not-ours"}, "cursor"),
        ({"model": "a\x00b"}, "model"),  # PostgreSQL text holds no NUL: the export broke after its headers
        ({"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "to"),
    ],
)
def test_bad_filters_are_refused_naming_the_parameter(mesh, params, param):
    _, token = sign_up(mesh)
    r = api(mesh, "GET", "/api/logs", token, params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_request" and param in error["message"]
    bad_format = api(mesh, "GET", "/api/logs/export", token, params={"format": "xml"})
    assert bad_format.status_code == 400 and bad_format.json()["error"]["param"] == "format"


def test_rebuilding_the_logs_leaves_balances_and_entries_as_they_were(mesh):
    account_id, token, _, key = funded_key(mesh, "1000", label="rebuilt")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)
    for text in ("a", "a b"):
        client.chat.completions.create(model="acme/small", messages=[{"role": "user", "content": text}])
    deadline = time.monotonic() + 15
    while len(logs(mesh, token)["data"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    wait_for_balance(mesh, token, 1000 - Decimal(sum(Decimal(e["cost_usd"]) for e in logs(mesh, token)["data"])))
    before = (logs(mesh, token)["data"], api(mesh, "GET", "/api/billing/balance", token).json()["balance_usd"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_DATA_DIR"] = str(mesh.data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "rebuild", "logs"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "logs rebuilt as generation 2" in result.stdout
    after = (logs(mesh, token)["data"], api(mesh, "GET", "/api/billing/balance", token).json()["balance_usd"])
    assert after == before and len(before[0]) == 2


def test_bodies_are_logged_apart_when_turned_on(mesh, tmp_path):
    process = MeshProcess(
        tmp_path / "data", mesh.config, env={"MESH_LOG_BODIES": "on", "MESH_LOG_RETENTION_DAYS": "30"}
    )
    process.start()
    try:
        account_id, token, _, key = funded_key(process, "1000", label="bodies")
        client = openai.OpenAI(base_url=process.url + "/v1", api_key=key["key"], max_retries=0)
        plain = client.chat.completions.with_raw_response.create(
            model="acme/small", messages=[{"role": "user", "content": "tell me plainly"}]
        )
        with client.chat.completions.with_streaming_response.create(
            model="acme/small", messages=[{"role": "user", "content": "tell me in a stream"}], stream=True
        ) as streamed:
            stream_trace = streamed.headers["x-mesh-trace-id"]
            list(streamed.iter_lines())
        details = {}
        deadline = time.monotonic() + 15
        for trace in (plain.headers["x-mesh-trace-id"], stream_trace):
            while True:
                detail = api(process, "GET", f"/api/logs/{trace}", token)
                if (detail.status_code == 200 and detail.json()["request"]) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            details[trace] = detail.json()
        first, second = details.values()
        assert "tell me plainly" in first["request"] and "w0 w1" in first["response"]
        assert "tell me in a stream" in second["request"] and second["response"].rstrip().endswith("[DONE]")
        assert not first["bodies_truncated"]
        _, stranger = sign_up(process)
        assert api(process, "GET", f"/api/logs/{stream_trace}", stranger).status_code == 404

        import asyncio
        import nats

        async def streams() -> dict:
            nc = await nats.connect(json.loads((process.data_dir / "running.json").read_text())["nats_url"])
            try:
                js = nc.jetstream()
                return {name: await js.stream_info(name) for name in ("MESH", "MESH_BODIES")}
            finally:
                await nc.close()

        info = asyncio.run(streams())
        assert info["MESH_BODIES"].config.max_age == 30 * 86_400 and info["MESH_BODIES"].state.messages == 2
        assert info["MESH"].config.max_age in (0, None)  # the billing log never expires, and holds no bodies
    finally:
        process.stop()


def test_a_request_made_with_a_template_is_logged_with_its_id_and_version(mesh):
    account_id, token, _, key = funded_key(mesh, "1000", label="templated")
    template = api(
        mesh,
        "POST",
        "/api/templates",
        token,
        json={"name": "greet", "messages": [{"role": "user", "content": "hello {{name}}"}]},
    ).json()
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="acme/small",
        messages=[{"role": "user", "content": "and more"}],
        extra_body={"template": "greet", "variables": {"name": "Ada"}},
    )
    trace = raw.headers["x-mesh-trace-id"]
    deadline = time.monotonic() + 15
    while (entry := api(mesh, "GET", f"/api/logs/{trace}", token)).status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert entry.json()["template"] == {"id": template["id"], "version": 1}
    assert entry.json()["prompt_tokens"] == 4  # the rendered prompt: "hello Ada" and "and more"


UPSTREAM_DELAY_MS = 200  # the fake waits this long before its response's headers


def test_latencies_run_from_the_requests_arrival_for_plain_and_streamed_requests(mesh, upstream):
    """What a client measures: the first token of a stream comes after the upstream's own wait for its headers,
    and that wait is the upstream's time, not Mesh's."""
    _, token, _, key = funded_key(mesh, "1000", label="latency")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)
    upstream.delay = UPSTREAM_DELAY_MS / 1000
    try:
        traces = {}
        for stream in (False, True):
            began = time.perf_counter()
            raw = client.chat.completions.with_raw_response.create(
                model="acme/small", messages=[{"role": "user", "content": "how long"}], stream=stream
            )
            answer = raw.parse()
            if stream:
                list(answer)
            traces[stream] = (raw.headers["x-mesh-trace-id"], (time.perf_counter() - began) * 1000)
    finally:
        upstream.delay = 0.0
    for stream, (trace, measured_ms) in traces.items():
        deadline = time.monotonic() + 15
        while (found := api(mesh, "GET", f"/api/logs/{trace}", token)).status_code == 404:
            assert time.monotonic() < deadline, f"{trace} not in the logs"
            time.sleep(0.1)
        latency = found.json()["latency_ms"]
        assert UPSTREAM_DELAY_MS <= latency["upstream"] <= latency["total"] <= measured_ms, (stream, latency)
        if stream:
            assert UPSTREAM_DELAY_MS <= latency["first_token"] <= latency["total"], latency
        else:
            assert latency["first_token"] is None
