"""Adding a model at runtime (`POST /admin/models`): a model the fake OpenAI-kind upstream offers but mesh.toml does
not declare is added with a price; it is served through the openai SDK and billed at that price, listed by
`GET /v1/models`, learnt by a second gateway process without a restart, and served again after a restart; bad
input is refused and appends nothing."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import MeshProcess, funded_key, gateway_pair

ADDED = "acme/gpt-free"  # the fake upstream lists gpt-free; mesh.toml declares only acme/gpt-test
PROMPT, COMPLETION = "0.002", "0.004"  # USD per 1K tokens


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, nats_url, postgres_server, fake_openai):
    mesh_toml = f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{fake_openai.url}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "acme/gpt-test"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
aliases = ["gpt-test"]
"""
    with gateway_pair(tmp_path_factory, nats_url, postgres_server, mesh_toml, "added") as processes:
        yield processes


def operator(mesh: MeshProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {mesh.operator_token}"}


def add(mesh: MeshProcess, **body) -> httpx.Response:
    return http_calls.post(f"{mesh.url}/admin/models", headers=operator(mesh), json=body, timeout=30)


def served(mesh: MeshProcess, key: str) -> tuple[str, int, int]:
    """(trace id, prompt tokens, completion tokens) of one request to the added model through the openai SDK."""
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model=ADDED, messages=[{"role": "user", "content": "say hello"}], max_tokens=20
    )
    answer = raw.parse()
    assert answer.choices[0].message.content
    return raw.headers["x-mesh-trace-id"], answer.usage.prompt_tokens, answer.usage.completion_tokens


def logged(mesh: MeshProcess, token: str, trace_id: str) -> dict:
    for _ in range(150):
        entry = http_calls.get(
            f"{mesh.url}/api/logs/{trace_id}", headers={"authorization": f"Bearer {token}"}, timeout=15
        )
        if entry.status_code == 200:
            return entry.json()
        time.sleep(0.1)
    raise AssertionError(f"no log entry for {trace_id}: {entry.text}")


def test_an_added_model_is_served_billed_at_its_price_everywhere_and_after_a_restart(gateways):
    first, second = gateways
    offered = http_calls.get(f"{first.url}/admin/providers/acme/models", headers=operator(first), timeout=30).json()
    assert next(m for m in offered["models"] if m["id"] == "gpt-free")["mesh_ids"] == []
    funded = funded_key(first, "5")
    sdk = openai.OpenAI(base_url=second.url + "/v1", api_key=funded.key, max_retries=0)
    assert ADDED not in {m.id for m in sdk.models.list()}
    with pytest.raises(openai.NotFoundError):
        served(second, funded.key)

    before = datetime.now(timezone.utc)
    r = add(
        first,
        id=ADDED,
        provider="acme",
        upstream="gpt-free",
        prompt_usd_per_1k=PROMPT,
        completion_usd_per_1k=COMPLETION,
    )
    assert r.status_code == 201, r.text
    model = r.json()
    assert (model["id"], model["provider"], model["enabled"], model["free"]) == (ADDED, "acme", True, False)
    assert (Decimal(model["prompt_usd_per_1k"]), Decimal(model["completion_usd_per_1k"])) == (
        Decimal(PROMPT),
        Decimal(COMPLETION),
    )
    assert (model["max_output_tokens"], model["context_tokens"]) == (32_768, 32_768)  # openai-compatible's default
    (action,) = audit(first, 1)  # recorded as an operator's act, naming who
    assert (action["action"], action["event"], action["target"], action["operator"]) == (
        "model added",
        "model.added",
        ADDED,
        "token",
    )
    listed = http_calls.get(f"{first.url}/admin/models", headers=operator(first), timeout=30).json()["data"]
    assert next(m for m in listed if m["id"] == ADDED) == model
    offered = http_calls.get(f"{first.url}/admin/providers/acme/models", headers=operator(first), timeout=30).json()
    assert next(m for m in offered["models"] if m["id"] == "gpt-free")["mesh_ids"] == [ADDED]

    auth = {"authorization": f"Bearer {funded.token}"}
    now = http_calls.get(f"{first.url}/api/models", headers=auth, timeout=30).json()["data"]
    then = http_calls.get(f"{first.url}/api/models", params={"at": before.isoformat()}, headers=auth, timeout=30)
    assert ADDED in {m["id"] for m in now} and ADDED not in {m["id"] for m in then.json()["data"]}

    # the process that added it serves it, billed at its price
    trace_id, prompt, completion = served(first, funded.key)
    entry = logged(first, funded.token, trace_id)
    cost = (prompt * Decimal(PROMPT) + completion * Decimal(COMPLETION)) / 1000
    assert (entry["model"], Decimal(entry["cost_usd"])) == (ADDED, cost)
    assert cost > 0
    assert ADDED in {m.id for m in openai.OpenAI(base_url=first.url + "/v1", api_key=funded.key).models.list()}

    # the other process heard the event: no restart
    assert ADDED in {m.id for m in sdk.models.list()}
    trace_id, prompt, completion = served(second, funded.key)
    assert Decimal(logged(first, funded.token, trace_id)["cost_usd"]) == cost

    # a restart serves it again, from the catalog read model
    first.stop()
    first.start()
    trace_id, _, _ = served(first, funded.key)
    assert Decimal(logged(first, funded.token, trace_id)["cost_usd"]) == cost
    assert next(m for m in first_models(first) if m["id"] == ADDED) == model


def audit(mesh: MeshProcess, limit: int) -> list[dict]:
    """The newest operator actions."""
    return http_calls.get(f"{mesh.url}/admin/audit?limit={limit}", headers=operator(mesh), timeout=30).json()["data"]


def first_models(mesh: MeshProcess) -> list[dict]:
    return http_calls.get(f"{mesh.url}/admin/models", headers=operator(mesh), timeout=30).json()["data"]


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"provider": "nope"}, 400, "invalid_model", "provider 'nope' is not a provider of mesh.toml; known: acme"),
        ({"provider": "mesh"}, 400, "invalid_model", "not a provider of mesh.toml"),
        ({"id": "acme/gpt-test"}, 409, "model_taken", "'acme/gpt-test' is a model of mesh.toml or an alias"),
        ({"id": "gpt-test"}, 409, "model_taken", "is a model of mesh.toml or an alias"),
        ({"prompt_usd_per_1k": None}, 400, None, "prompt_usd_per_1k"),
        ({"completion_usd_per_1k": "0.0000000001"}, 400, "invalid_amount", "at most 9 decimal places"),
        ({"max_output_tokens": 100, "context_tokens": 50}, 400, "invalid_model", "larger than its context_tokens"),
        ({"upstream": ""}, 400, None, "upstream"),
    ],
)
def test_bad_input_is_refused_and_appends_nothing(gateways, body, status, code, words):
    first = gateways[0]
    fields = {
        "id": "acme/other-" + uuid.uuid4().hex[:6],
        "provider": "acme",
        "upstream": "gpt-4o-mini",
        "prompt_usd_per_1k": "1",
        "completion_usd_per_1k": "2",
        **body,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    before = first_models(first), audit(first, 1)
    r = add(first, **fields)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"], error
    if code is not None:
        assert error["code"] == code
    assert (first_models(first), audit(first, 1)) == before


def test_an_id_added_already_is_refused(gateways):
    first = gateways[0]
    body = {"provider": "acme", "upstream": "gpt-4o-mini", "prompt_usd_per_1k": "0", "completion_usd_per_1k": "0"}
    model_id = "acme/mini-" + uuid.uuid4().hex[:6]
    assert add(first, id=model_id, **body).status_code == 201
    again = add(first, id=model_id, **body)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "model_taken")
    assert "a model added already" in again.json()["error"]["message"]
    off = http_calls.put(
        f"{first.url}/admin/models/{model_id}", headers=operator(first), json={"enabled": False}, timeout=30
    )
    assert off.status_code == 200 and off.json()["enabled"] is False
