"""The budget invariant under load: two gateway processes, hundreds of concurrent requests, one key.

Neither the key's spend cap nor the account's credits is ever exceeded, and the
budget is used up to within one lease (docs/architecture.md, "The budget invariant"). Also: a revocation reaches
every gateway process within a second.
"""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal

import httpx
import pytest

from tests import http_calls
from tests.e2e.conftest import MeshProcess, funded_key, gateway_pair

REQUESTS = 400
PROMPT_PER_1K, COMPLETION_PER_1K = Decimal("0.5"), Decimal("1.5")


UPSTREAM_REPLY_WORDS = 40  # the words of each reply of the `upstream` fixture (tests/e2e/conftest.py)


@pytest.fixture(scope="module")
def gateways(tmp_path_factory, nats_url, postgres_server, upstream):
    mesh_toml = f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{upstream.url}/v1"

[[models]]
id = "acme/gpt-test"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "{PROMPT_PER_1K}"
completion_usd_per_1k = "{COMPLETION_PER_1K}"
"""
    with gateway_pair(tmp_path_factory, nats_url, postgres_server, mesh_toml, "budget") as processes:
        yield processes


async def fire(gateways: list[MeshProcess], key: str) -> list[httpx.Response]:
    rng = random.Random(42)
    limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            gw = gateways[i % len(gateways)]
            return await client.post(
                gw.url + "/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={
                    "model": "acme/gpt-test",
                    "max_tokens": rng.randint(1, 40),
                    "messages": [{"role": "user", "content": "count to forty please"}],
                },
            )

        return await asyncio.gather(*(one(i) for i in range(REQUESTS)))


def settled_spend(gw: MeshProcess, token: str, key_id: str, served: int) -> Decimal:
    """The key's spend from the projection, once it has counted every served request."""
    deadline = time.monotonic() + 30
    while True:
        body = http_calls.get(f"{gw.url}/api/keys/{key_id}", headers={"authorization": f"Bearer {token}"}).json()
        if body["stats"]["requests"] == served or time.monotonic() > deadline:
            assert body["stats"]["requests"] == served
            return Decimal(body["spend_usd"])
        time.sleep(0.1)


def worst_case(max_tokens: int = 40) -> Decimal:
    # the gateway reserves prompt bytes + 64 tokens and max_tokens completion tokens
    prompt_bound = 16 + 8 + 60  # overheads and the JSON of the one message
    return (prompt_bound * PROMPT_PER_1K + max_tokens * COMPLETION_PER_1K) / 1000


@pytest.mark.parametrize("limit, credits, cap", [("key_spend_cap", "1000", "6.5"), ("account_balance", "6.5", None)])
def test_hundreds_of_concurrent_requests_never_overspend(gateways, upstream, limit, credits, cap):
    _, token, key, created = funded_key(gateways[0], credits, label="load", **({"spend_cap_usd": cap} if cap else {}))
    key_id = created["id"]
    budget = Decimal(cap or credits)
    responses = asyncio.run(fire(gateways, key))
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 402]
    assert len(served) + len(refused) == REQUESTS, {r.status_code for r in responses}
    assert {r.json()["error"]["code"] for r in refused} == {limit}
    assert all("USD" in r.json()["error"]["message"] for r in refused)
    assert 0.3 * REQUESTS < len(served) < 0.8 * REQUESTS  # the budget affords roughly half of them

    spend = settled_spend(gateways[0], token, key_id, len(served))
    lease = 32 * worst_case()  # one lease: Budgets.lease_multiple worst-case requests
    print(
        f"\n{limit}: {len(served)} served, {len(refused)} refused; spend {spend} of {budget} USD "
        f"(unused {budget - spend}, one lease <= {lease})"
    )
    assert spend <= budget
    assert budget - spend <= lease


def test_revocation_reaches_every_gateway_within_a_second(gateways):
    _, token, key, created = funded_key(gateways[0], "10", label="load")
    key_id = created["id"]
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "acme/gpt-test", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}
    for gw in gateways:  # both processes know (and cache) the key
        assert http_calls.post(gw.url + "/v1/chat/completions", headers=headers, json=body).status_code == 200
    started = time.monotonic()
    revoked = http_calls.post(
        f"{gateways[0].url}/api/keys/{key_id}/revoke", headers={"authorization": f"Bearer {token}"}
    )
    assert revoked.status_code == 200
    while True:
        r = http_calls.post(gateways[1].url + "/v1/chat/completions", headers=headers, json=body)
        if r.status_code == 402:
            break
        assert time.monotonic() - started < 5, "revocation never arrived"
    elapsed = time.monotonic() - started
    print(f"\nrevocation reached the other gateway process in {elapsed * 1000:.0f} ms")
    assert r.json()["error"]["code"] == "key_revoked"
    assert elapsed < 1.0
