"""Hostile input through `mesh up`: every refusal a 4xx in the error shape that records nothing; an event no
projection can apply is quarantined, not a wedge; upstream failures tell no secrets; free models are rate-limited."""

from __future__ import annotations

import asyncio
import json
import re
import os
import subprocess
import sys
import time
import uuid

import httpx
import nats
import pytest

from api.embedded import free_port
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, aggregate_subject
from tests import http_calls
from tests.e2e.conftest import MeshProcess, events_after, funded_key
from tests.e2e.test_walking_skeleton import api, sign_up

FREE_RPM = 5
WRONG_UPSTREAM_KEY = "sk-wrong-upstream-key-must-not-leak"


def head(mesh) -> int:
    return mesh.health().json()["stream_head"]


def refused(response: httpx.Response, status: int = 400, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"} and error["message"], error
    if code:
        assert error["code"] == code, error
    return error


def nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_hostile_api_bodies_are_refused_and_record_nothing(mesh):
    account_id, token = sign_up(mesh)
    key = api(mesh, "POST", "/api/keys", token, json={"label": "good"}).json()
    before = head(mesh)
    error = refused(api(mesh, "POST", "/api/signup", json={"email": "x\u0000@a.io", "password": "aaaaaaaaaa"}))
    assert "email" in error["message"] and "control characters" in error["message"], error
    refused(api(mesh, "POST", "/api/signup", json={"email": "x" * 300 + "@a.io", "password": "aaaaaaaaaa"}))
    error = refused(api(mesh, "POST", "/api/keys", token, json={"label": "prod\u0000"}))
    assert error["message"].startswith("invalid request body: label: contains a character that is not allowed")
    error = refused(api(mesh, "POST", "/api/keys", token))
    assert error["message"] == "invalid request body: data: a JSON body is required"
    refused(api(mesh, "POST", "/api/keys", token, json={"label": "two\nlines"}))
    error = refused(
        api(mesh, "POST", "/api/keys", token, json={"label": "k", "spend_cap_usd": "1e28"}), code="invalid_amount"
    )
    assert "at most 1000000 USD" in error["message"]
    refused(api(mesh, "PATCH", f"/api/keys/{key['id']}", token, json={"spend_cap_usd": "1e28"}), code="invalid_amount")
    refused(api(mesh, "POST", "/api/keys", token, json={"label": "k", "expires_at": "2030-01-01T00:00:00"}))
    refused(api(mesh, "PATCH", f"/api/keys/{key['id']}", token, json={"expires_at": "2030-01-01T00:00:00"}))
    for far in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):  # no valid UTC time: a 500 on reading
        refused(
            api(mesh, "POST", "/api/keys", token, json={"label": "k", "expires_at": far}), code="invalid_key_settings"
        )
    refused(api(mesh, "POST", "/api/keys", token, json={"label": "k", "allowed_models": ["mesh/echo\u0000"]}))
    refused(
        http_calls.post(
            f"{mesh.url}/api/keys/{key['id']}/rotate",
            content=b'{"grace_seconds": 1e20}',
            headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
    )
    refused(api(mesh, "GET", "/api/keys?from=2026-01-01T00:00:00", token))
    refused(api(mesh, "GET", "/api/billing/balance?at=2026-01-01T00:00:00", token))
    operator = mesh.operator_token
    refused(
        api(
            mesh,
            "POST",
            f"/admin/accounts/{account_id}/credits",
            operator,
            json={"amount_usd": "5", "reason": "promo\u0000"},
        )
    )
    refused(
        api(
            mesh,
            "POST",
            f"/admin/accounts/{account_id}/credits",
            operator,
            json={"amount_usd": "1000000.01", "reason": "too much"},
        ),
        code="invalid_amount",
    )
    refused(api(mesh, "POST", "/admin/topups/ref%00x/confirm", operator, json={}), 404, "not_found")
    refused(api(mesh, "POST", "/api/billing/topups", token, json={"amount_usd": "1e28", "provider": "x\u0000"}))
    for path in ("/api/signup", "/api/keys"):
        error = refused(
            http_calls.post(
                mesh.url + path,
                content=nested(100_000),
                timeout=30,
                headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
            )
        )
        assert "nests too deeply" in error["message"]
    error = refused(
        http_calls.post(
            mesh.url + "/v1/chat/completions",
            content=nested(100_000),
            timeout=30,
            headers={"authorization": f"Bearer {key['key']}", "content-type": "application/json"},
        ),
        code="invalid_json",
    )
    assert "nests too deeply" in error["message"]
    assert events_after(mesh, before) == []
    assert http_calls.get(mesh.url + "/health").json()["status"] == "ok"
    # the same service still takes good input
    assert (
        api(
            mesh,
            "POST",
            "/api/keys",
            token,
            json={"label": "still fine", "spend_cap_usd": "1000000", "expires_at": "2030-01-01T00:00:00Z"},
        ).status_code
        == 201
    )


@pytest.fixture(scope="module")
def hostile_mesh(tmp_path_factory, mesh_config):
    """A Mesh of its own (its stream gets a poisoned event): the shared config's provider with a wrong key, a
    provider that is down, and a low free-model rate limit."""
    down = free_port()
    config = tmp_path_factory.mktemp("hostile") / "mesh.toml"
    config.write_text(
        mesh_config.read_text()
        + f"""
[providers.down]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{down}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "down/gpt-test"
provider = "down"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 256
"""
    )
    process = MeshProcess(
        tmp_path_factory.mktemp("hostile-mesh") / "data",
        config,
        # its log as log shippers read it: one JSON object per line
        env={"ACME_API_KEY": WRONG_UPSTREAM_KEY, "MESH_FREE_RPM": str(FREE_RPM), "MESH_LOG_FORMAT": "json"},
    )
    process.down_port = down
    process.start()
    yield process
    process.stop()


def chat(mesh, key: str, model: str) -> httpx.Response:
    return http_calls.post(
        mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )


def test_upstream_failures_say_which_provider_and_how_but_no_secrets(hostile_mesh):
    key = funded_key(hostile_mesh).key
    answer = chat(hostile_mesh, key, "acme/gpt-test")
    error = refused(answer, 502, "upstream_auth_failed")
    assert "acme" in error["message"] and "credentials" in error["message"]
    # the operator's log says it too, as JSON lines, with the request's trace id (and no text-format lines)
    lines = [json.loads(line) for line in hostile_mesh.output().splitlines() if line.startswith("{")]
    (logged,) = [line for line in lines if line.get("trace_id") == answer.headers["x-mesh-trace-id"]]
    assert logged["level"] == "error" and "refused Mesh's credentials" in logged["message"], logged
    assert set(logged) == {"time", "level", "logger", "message", "trace_id"} and logged["logger"].startswith("mesh")
    assert not re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ", hostile_mesh.output(), re.M)
    assert "Incorrect API key" not in error["message"] and WRONG_UPSTREAM_KEY not in error["message"]
    error = refused(chat(hostile_mesh, key, "down/gpt-test"), 502, "upstream_unreachable")
    assert error["message"] == "provider down is unreachable: the connection was refused"
    assert str(hostile_mesh.down_port) not in error["message"] and "127.0.0.1" not in error["message"]
    assert WRONG_UPSTREAM_KEY not in hostile_mesh.output()


def test_a_free_model_is_rate_limited_per_account_across_its_keys_and_refusals_record_nothing(hostile_mesh):
    account_id, token = sign_up(hostile_mesh)
    grant = {"amount_usd": "5", "reason": "test"}
    api(hostile_mesh, "POST", f"/admin/accounts/{account_id}/credits", hostile_mesh.operator_token, json=grant)
    first, second = (api(hostile_mesh, "POST", "/api/keys", token, json={"label": k}).json()["key"] for k in "ab")
    other_account = funded_key(hostile_mesh).key
    for i in range(FREE_RPM):  # the account's two keys share one allowance
        assert chat(hostile_mesh, (first, second)[i % 2], "mesh/echo").status_code == 200
    before = head(hostile_mesh)
    for key in (first, second):
        r = chat(hostile_mesh, key, "mesh/echo")
        error = refused(r, 429, "free_rate_limited")
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-mesh-trace-id"]
        assert f"{FREE_RPM} requests a minute per account" in error["message"]
    time.sleep(0.5)  # a usage event would be published within moments
    assert [t for t in events_after(hostile_mesh, before) if t == "usage.recorded"] == []
    assert chat(hostile_mesh, other_account, "mesh/echo").status_code == 200  # another account: its own allowance


def inject_poison(mesh) -> int:
    """A signup event with a NUL in the email, as a writer without today's rules would have appended it."""
    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]

    async def publish() -> int:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            last = (await js.stream_info("MESH")).state.last_seq
            template = next(
                m
                for m in [await js.get_msg("MESH", s) for s in range(last, 0, -1)]
                if m.headers.get(HEADER_TOPIC) == "account.registered"
            )
            body = json.loads(template.data) | {"email": "x\u0000@a.io", "token_hash": uuid.uuid4().hex}
            aggregate = uuid.uuid4()
            ack = await js.publish(
                aggregate_subject("MESH", aggregate),
                json.dumps(body).encode(),
                headers={
                    HEADER_TOPIC: "account.registered",
                    HEADER_ORIGINATOR_ID: str(aggregate),
                    HEADER_ORIGINATOR_VERSION: "1",
                },
            )
            return ack.seq
        finally:
            await nc.close()

    return asyncio.run(publish())


def wait_for_health(mesh, check, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = mesh.health().json()
        if check(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def mesh_cli(mesh, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MESH_DATA_DIR": str(mesh.data_dir), "MESH_CONFIG": str(mesh.config)}
    for name in ("MESH_NATS_URL", "MESH_DATABASE_URL"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True, timeout=60)


def test_a_poisoned_event_is_quarantined_and_the_service_goes_on_across_a_restart(hostile_mesh):
    mesh = hostile_mesh
    sign_up(mesh)
    position = inject_poison(mesh)
    _, token = sign_up(mesh)  # a signup after the poison: its token must work (the directory is not wedged)
    assert api(mesh, "GET", "/api/keys", token).status_code == 200
    health = wait_for_health(mesh, lambda h: h["quarantined"])
    assert health["status"] == "degraded"
    assert [(q["projection"], q["position"], q["event"]) for q in health["quarantined"]] == [
        ("directory", position, "account.registered")
    ]
    assert "NUL" in health["quarantined"][0]["error"]
    listed = mesh_cli(mesh, "projections", "quarantine")
    assert listed.returncode == 1 and f"directory\t{position}\taccount.registered" in listed.stdout, listed
    retried = mesh_cli(mesh, "projections", "retry")  # no fix for a NUL in PostgreSQL text: it stays
    assert retried.returncode == 1 and "still fails" in retried.stdout, retried

    assert mesh.stop() == 0
    mesh.start()
    _, token = sign_up(mesh)
    assert api(mesh, "POST", "/api/keys", token, json={"label": "after restart"}).status_code == 201
    health = wait_for_health(mesh, lambda h: all(p["lag"] == 0 for p in h["projections"]))
    assert health["status"] == "degraded" and [q["position"] for q in health["quarantined"]] == [position]
    assert all(p["lag"] == 0 for p in health["projections"])


def test_mesh_up_prints_only_urls_that_answer(mesh):
    import re

    urls = re.findall(r"http://[^\s,)]+", mesh.output().split("Mesh is up")[-1])
    assert any(u.endswith("/schema") for u in urls) and any("/v1/" in u for u in urls), urls
    for url in urls:
        assert http_calls.get(url, timeout=10).status_code != 404, url


def test_the_openapi_docs_are_titled_mesh_and_load_nothing_from_elsewhere(mesh):
    import re
    from importlib.metadata import version

    document = http_calls.get(mesh.url + "/schema/openapi.json").json()
    assert document["info"] == {"title": "Mesh", "version": version("mesh-gateway")}
    page = http_calls.get(mesh.url + "/schema").text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    assert len(assets) >= 3, page[:500]
    for asset in assets:
        assert asset.startswith("/"), asset  # served by Mesh: no CDN, works offline
        assert http_calls.get(mesh.url + asset).status_code == 200, asset
