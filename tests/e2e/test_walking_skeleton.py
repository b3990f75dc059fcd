"""Item 5 of the first issue over real HTTP: sign up, get credits, make a key, call models with the
official `openai` SDK, and see the balance fall by exactly the cost of the calls."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx
import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import UPSTREAM_KEY, events_after

PROMPT_PER_1K = Decimal("0.5")
COMPLETION_PER_1K = Decimal("1.5")


def api(mesh, method: str, path: str, token: str | None = None, **kwargs) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return http_calls.request(method, mesh.url + path, headers=headers, timeout=30, **kwargs)


def sign_up(mesh) -> tuple[str, str]:
    r = api(
        mesh,
        "POST",
        "/api/signup",
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"},
    )
    assert r.status_code == 201, r.text
    return r.json()["account_id"], r.json()["management_token"]


def balance(mesh, token: str) -> dict:
    r = api(mesh, "GET", "/api/billing/balance", token)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for_balance(mesh, token: str, expected: Decimal, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = balance(mesh, token)
        if Decimal(body["balance_usd"]) == expected or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


def cost(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return (prompt_tokens * PROMPT_PER_1K + completion_tokens * COMPLETION_PER_1K) / 1000


def stream_head(mesh) -> int:
    return mesh.health().json()["stream_head"]


def test_a_request_flows_from_key_to_exact_balance(mesh, fake_openai):
    account_id, token = sign_up(mesh)
    r = api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "10.00", "reason": "welcome"},
    )
    assert r.status_code == 201, r.text
    assert balance(mesh, token)["balance_usd"] == "10.000000"

    r = api(mesh, "POST", "/api/keys", token, json={"label": "ci"})
    assert r.status_code == 201, r.text
    key = r.json()
    assert key["key"].startswith("mk-") and key["prefix"] == key["key"][:10]
    listed = api(mesh, "GET", "/api/keys", token).json()
    assert [k["id"] for k in listed["data"]] == [key["id"]]
    assert "key" not in listed["data"][0]  # the secret is shown once, at creation
    assert listed["as_of"]["position"] > 0

    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)

    # the free built-in model answers at once and costs nothing
    echo = client.chat.completions.create(model="mesh/echo", messages=[{"role": "user", "content": "hello mesh"}])
    assert echo.choices[0].message.content == "hello mesh"

    # a priced model on an OpenAI-compatible upstream, non-stream
    raw = client.chat.completions.with_raw_response.create(
        model="acme/gpt-test",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}],
    )
    assert raw.headers["x-mesh-trace-id"]
    completion = raw.parse()
    assert completion.usage.prompt_tokens == 5 and completion.usage.completion_tokens == 7
    assert fake_openai.requests[-1]["model"] == "gpt-test"

    # streamed, without asking for usage: billed all the same, and no usage chunk forwarded
    chunks = list(
        client.chat.completions.create(
            model="acme/gpt-test", messages=[{"role": "user", "content": "stream please"}], stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4 w5 w6"
    assert all(c.usage is None for c in chunks)
    assert fake_openai.requests[-1]["stream_options"] == {"include_usage": True}

    # streamed, asking for usage: the usage chunk arrives
    chunks = list(
        client.chat.completions.create(
            model="acme/gpt-test",
            messages=[{"role": "user", "content": "count me"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[-1].usage.prompt_tokens == 2 and chunks[-1].usage.completion_tokens == 7

    expected = Decimal("10") - cost(5, 7) - cost(2, 7) - cost(2, 7)
    body = wait_for_balance(mesh, token, expected)
    assert Decimal(body["balance_usd"]) == expected, body
    assert Decimal(body["spend_usd"]) == cost(5, 7) + cost(2, 7) * 2
    assert body["as_of"]["position"] > 0 and body["as_of"]["time"]


def test_secrets_never_reach_the_log(mesh):
    assert UPSTREAM_KEY not in mesh.output()


@pytest.fixture
def account(mesh):
    account_id, token = sign_up(mesh)
    api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "1", "reason": "test"},
    )
    key = api(mesh, "POST", "/api/keys", token, json={"label": "k"}).json()["key"]
    return account_id, token, key


BAD_API_REQUESTS = [
    # (method, path, who, body or raw bytes, status, code)
    ("POST", "/api/signup", None, b"{not json", 400, "invalid_request"),
    ("POST", "/api/signup", None, {"email": 5, "password": "x" * 10}, 400, "invalid_request"),
    ("POST", "/api/signup", None, {"email": "nobody", "password": "long enough"}, 400, "invalid_email"),
    ("POST", "/api/signup", None, {"email": "a@example.com", "password": "short"}, 400, "invalid_password"),
    ("POST", "/api/login", None, {"email": "ghost@example.com", "password": "whatever1"}, 401, "bad_credentials"),
    ("POST", "/api/keys", "token", {"label": ""}, 400, "invalid_key_settings"),
    ("POST", "/api/keys", "token", {"label": "x", "spend_cap_usd": "-1"}, 400, "invalid_amount"),  # as "1e28"
    ("POST", "/api/keys", "token", {"label": "x", "spend_cap_usd": 1.5}, 400, "invalid_amount"),
    ("POST", "/api/keys", "token", {"label": "x", "default_model": "nope/nope"}, 404, "model_not_found"),
    ("POST", "/api/keys", None, {"label": "x"}, 401, "unauthorized"),
    ("POST", "/api/keys", "garbage", {"label": "x"}, 401, "unauthorized"),
    ("POST", "/api/keys", "key", {"label": "x"}, 403, "forbidden"),
    ("GET", "/api/billing/balance", None, None, 401, "unauthorized"),
    (
        "POST",
        "/admin/accounts/{account}/credits",
        "operator",
        {"amount_usd": "-5", "reason": "x"},
        400,
        "invalid_amount",
    ),
    (
        "POST",
        "/admin/accounts/{account}/credits",
        "operator",
        {"amount_usd": "ten", "reason": "x"},
        400,
        "invalid_amount",
    ),
    (
        "POST",
        "/admin/accounts/{account}/credits",
        "operator",
        {"amount_usd": "0", "reason": "x"},
        400,
        "invalid_amount",
    ),
    (
        "POST",
        "/admin/accounts/{account}/credits",
        "operator",
        {"amount_usd": 2.5, "reason": "x"},
        400,
        "invalid_amount",
    ),
    ("POST", "/admin/accounts/{account}/credits", "operator", {"amount_usd": "1"}, 400, "invalid_request"),
    ("POST", "/admin/accounts/{account}/credits", "token", {"amount_usd": "1", "reason": "x"}, 403, "forbidden"),
    (
        "POST",
        "/admin/accounts/00000000-0000-4000-8000-000000000000/credits",  # no account has it; one id for every worker
        "operator",
        {"amount_usd": "1", "reason": "x"},
        404,
        "not_found",
    ),
]


@pytest.mark.parametrize("method, path, who, body, status, code", BAD_API_REQUESTS)
def test_bad_input_gets_a_clear_error_and_records_nothing(mesh, account, method, path, who, body, status, code):
    account_id, token, key = account
    credential = {"token": token, "key": key, "operator": mesh.operator_token, "garbage": "mt-nope", None: None}[who]
    before = stream_head(mesh)
    kwargs = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
    r = api(mesh, method, path.format(account=account_id), credential, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    assert events_after(mesh, before) == []


def test_duplicate_email_is_refused_once_registered(mesh):
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    first = api(mesh, "POST", "/api/signup", json={"email": email, "password": "long enough"})
    assert first.status_code == 201
    before = stream_head(mesh)
    again = api(mesh, "POST", "/api/signup", json={"email": email.upper(), "password": "other password"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "email_taken"
    assert events_after(mesh, before) == []
    login = api(mesh, "POST", "/api/login", json={"email": email, "password": "long enough"})
    assert login.status_code == 200 and login.json()["account_id"] == first.json()["account_id"]


BAD_GATEWAY_REQUESTS = [
    # (key, body, status, code)
    (None, {"model": "mesh/echo", "messages": [{"role": "user", "content": "hi"}]}, 401, "missing_api_key"),
    ("mk-wrong", {"model": "mesh/echo", "messages": [{"role": "user", "content": "hi"}]}, 401, "invalid_api_key"),
    ("key", b"{oops", 400, "invalid_json"),
    ("key", {"model": "mesh/echo", "messages": "hi"}, 400, "invalid_request"),
    ("key", {"model": "mesh/echo", "messages": []}, 400, "invalid_request"),
    ("key", {"messages": [{"role": "user", "content": "hi"}]}, 400, "model_required"),
    ("key", {"model": "nope/unknown", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
    (
        "key",
        {"model": "mesh/echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
        400,
        "invalid_request",
    ),
]


@pytest.mark.parametrize("who, body, status, code", BAD_GATEWAY_REQUESTS)
def test_bad_gateway_requests_are_refused_and_record_nothing(mesh, account, who, body, status, code):
    _, _, key = account
    credential = key if who == "key" else who
    before = stream_head(mesh)
    headers = {"authorization": f"Bearer {credential}"} if credential else {}
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = http_calls.post(mesh.url + "/v1/chat/completions", headers=headers, timeout=30, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.headers["x-mesh-trace-id"]
    assert events_after(mesh, before) == []


def test_the_sdk_sees_openai_errors(mesh, account):
    _, _, key = account
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope/unknown", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=mesh.url + "/v1", api_key="mk-bad", max_retries=0).models.list()
    assert {m.id for m in client.models.list()} == {"mesh/echo", "acme/gpt-test"}
