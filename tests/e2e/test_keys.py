"""API keys over real HTTP: lifecycle, defaults, allowed models, stats, history, and who may touch what."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from tests import http_calls
from tests.e2e.test_walking_skeleton import api, sign_up


def chat(mesh, key: str, model: str | None = "mesh/echo", text: str = "hello") -> httpx.Response:
    body = {"messages": [{"role": "user", "content": text}]}
    if model:
        body["model"] = model
    return http_calls.post(
        mesh.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30
    )


def new_key(mesh, token: str, **settings) -> dict:
    r = api(mesh, "POST", "/api/keys", token, json={"label": "k", **settings})
    assert r.status_code == 201, r.text
    return r.json()


def refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


@pytest.fixture
def owner(mesh):
    account_id, token = sign_up(mesh)
    api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "5", "reason": "test"},
    )
    return account_id, token


def test_a_key_lives_through_its_whole_lifecycle(mesh, owner):
    _, token = owner
    key = new_key(mesh, token, default_model="mesh/echo")
    assert chat(mesh, key["key"], model=None).json()["choices"][0]["message"]["content"] == "hello"

    r = api(mesh, "PATCH", f"/api/keys/{key['id']}", token, json={"label": "renamed", "spend_cap_usd": "2.5"})
    assert r.status_code == 200 and r.json()["label"] == "renamed" and r.json()["spend_cap_usd"] == "2.500000"

    assert api(mesh, "POST", f"/api/keys/{key['id']}/disable", token).json()["status"] == "disabled"
    refused(chat(mesh, key["key"]), 402, "key_disabled")
    assert api(mesh, "POST", f"/api/keys/{key['id']}/enable", token).json()["status"] == "active"
    assert chat(mesh, key["key"]).status_code == 200

    rotated = api(mesh, "POST", f"/api/keys/{key['id']}/rotate", token, json={"grace_seconds": 0}).json()
    assert rotated["key"] != key["key"] and rotated["id"] == key["id"]
    refused(chat(mesh, key["key"]), 401, "invalid_api_key")
    assert chat(mesh, rotated["key"]).status_code == 200

    graceful = api(mesh, "POST", f"/api/keys/{key['id']}/rotate", token, json={"grace_seconds": 3600}).json()
    assert chat(mesh, rotated["key"]).status_code == 200  # the old secret still works during the grace period
    assert chat(mesh, graceful["key"]).status_code == 200

    assert api(mesh, "POST", f"/api/keys/{key['id']}/revoke", token).json()["status"] == "revoked"
    refused(chat(mesh, graceful["key"]), 402, "key_revoked")
    refused(api(mesh, "POST", f"/api/keys/{key['id']}/enable", token), 409, "key_revoked")

    history = api(mesh, "GET", f"/api/keys/{key['id']}/events", token)
    assert history.status_code == 200
    events = list(reversed(history.json()["data"]))  # newest first
    types = [e["type"] for e in events]
    assert types[:2] == ["key.created", "key.relabeled"] and "key.revoked" in types
    assert {e["by"] for e in events} == {"account"}
    assert "key.budget_leased" not in types
    assert types.count("key.rotated") == 2
    text = history.text
    for secret in (key["key"], rotated["key"], graceful["key"]):
        assert secret not in text and secret[10:30] not in text
    assert "hash" not in text


def test_allowed_models_expiry_and_missing_model(mesh, owner):
    _, token = owner
    limited = new_key(mesh, token, allowed_models=["mesh/echo"])
    refused(chat(mesh, limited["key"], model="acme/gpt-test"), 402, "model_not_allowed")
    assert chat(mesh, limited["key"]).status_code == 200
    listed = http_calls.get(mesh.url + "/v1/models", headers={"authorization": f"Bearer {limited['key']}"}).json()
    assert [m["id"] for m in listed["data"]] == ["mesh/echo"]
    refused(chat(mesh, limited["key"], model=None), 400, "model_required")

    past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat()
    api(mesh, "PATCH", f"/api/keys/{limited['id']}", token, json={"expires_at": past})
    refused(chat(mesh, limited["key"]), 402, "key_expired")


def test_stats_count_requests_tokens_and_spend(mesh, owner):
    _, token = owner
    key = new_key(mesh, token)
    for text in ("one two", "three four five"):
        assert chat(mesh, key["key"], model="acme/gpt-test", text=text).status_code == 200
    refused(chat(mesh, key["key"], model="nope/none"), 404, "model_not_found")  # refused: not a request
    deadline = time.monotonic() + 10
    while True:
        body = api(mesh, "GET", f"/api/keys/{key['id']}", token).json()
        if body["stats"]["requests"] == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    stats = body["stats"]
    assert stats["requests"] == 2 and stats["successes"] == 2 and stats["error_rate"] == 0.0
    assert (stats["prompt_tokens"], stats["completion_tokens"]) == (5, 14)
    expected = (5 * 0.5 + 14 * 1.5) / 1000
    assert body["spend_usd"] == stats["spend_usd"] == f"{expected:.6f}"
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
    windowed = api(mesh, "GET", f"/api/keys/{key['id']}", token, params={"from": future}).json()
    assert windowed["window"]["requests"] == 0 and windowed["stats"]["requests"] == 2
    listed = api(mesh, "GET", "/api/keys", token).json()
    assert next(k for k in listed["data"] if k["id"] == key["id"])["stats"]["requests"] == 2


def test_every_route_keeps_accounts_apart(mesh, owner):
    _, token = owner
    other_id, other_token = sign_up(mesh)
    key = new_key(mesh, token)
    key_routes = [
        ("GET", f"/api/keys/{key['id']}"),
        ("PATCH", f"/api/keys/{key['id']}"),
        ("POST", f"/api/keys/{key['id']}/revoke"),
        ("POST", f"/api/keys/{key['id']}/rotate"),
        ("POST", f"/api/keys/{key['id']}/disable"),
        ("POST", f"/api/keys/{key['id']}/enable"),
        ("GET", f"/api/keys/{key['id']}/events"),
    ]
    for method, path in key_routes:
        r = api(mesh, method, path, other_token, json={} if method != "GET" else None)
        assert r.status_code == 404, (method, path, r.text)
    assert key["id"] not in api(mesh, "GET", "/api/keys", other_token).text
    account_routes = [("GET", "/api/keys"), ("POST", "/api/keys"), ("GET", "/api/billing/balance")]
    for method, path in account_routes:
        refused(
            api(mesh, method, path, key["key"], json={"label": "x"} if method == "POST" else None), 403, "forbidden"
        )  # an API key only reaches /v1/*
        refused(
            api(mesh, method, path, mesh.operator_token, json={"label": "x"} if method == "POST" else None),
            401,
            "unauthorized",
        )
    for credential in (token, key["key"]):
        refused(
            api(
                mesh, "POST", f"/admin/accounts/{other_id}/credits", credential, json={"amount_usd": "1", "reason": "x"}
            ),
            403,
            "forbidden",
        )
    refused(chat(mesh, token), 401, "invalid_api_key")  # a management token is not an API key
    refused(chat(mesh, mesh.operator_token), 401, "invalid_api_key")
    assert chat(mesh, key["key"]).status_code == 200  # the owner's key still works


def test_key_bodies_are_validated(mesh, owner):
    _, token = owner
    key = new_key(mesh, token)
    for body, code in [
        ({"label": "x", "cap_reset": "hourly", "spend_cap_usd": "1"}, "invalid_key_settings"),  # CAP_PERIODS
        ({"label": "x", "cap_reset": "daily"}, "invalid_key_settings"),
        ({"label": "x", "expires_at": "tomorrow"}, "invalid_request"),
    ]:
        refused(api(mesh, "POST", "/api/keys", token, json=body), 400, code)
    # which models are enabled is the server's state, not a rule of the body: 404 as in /v1
    refused(
        api(mesh, "POST", "/api/keys", token, json={"label": "x", "allowed_models": ["nope/none"]}),
        404,
        "model_not_found",
    )
    refused(api(mesh, "PATCH", f"/api/keys/{key['id']}", token, json={"colour": "red"}), 400, "invalid_request")
    refused(
        api(mesh, "POST", f"/api/keys/{key['id']}/rotate", token, json={"grace_seconds": 10**9}), 400, "invalid_request"
    )  # the body's bound (30 days, the domain's MAX_ROTATION_GRACE)
    # JSON has one kind of number: 5.0 is the integer 5 (as the document's "integer" says); 5.5 is not
    whole = api(mesh, "POST", f"/api/keys/{key['id']}/rotate", token, json={"grace_seconds": 5.0})
    assert whole.status_code == 200, whole.text
    refused(
        api(mesh, "POST", f"/api/keys/{key['id']}/rotate", token, json={"grace_seconds": 5.5}), 400, "invalid_request"
    )
    refused(api(mesh, "GET", f"/api/keys/{uuid.uuid4()}", token), 404, "not_found")
