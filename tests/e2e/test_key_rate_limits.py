"""Per-key rate limits (rpm_limit, tpm_limit) held across two gateway processes on one NATS and one database,
through real HTTP with the openai SDK's wire format; the set-up is the budget invariant's two `mesh up`."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from tests import http_calls
from tests.e2e.conftest import funded_key
from tests.e2e.test_budget_invariant import gateways  # noqa: F401 - the two processes, as a fixture

pytestmark = pytest.mark.long(waits=True)  # scheduled first, beside a module that computes (tests/conftest.py)

MODEL = "acme/gpt-test"


def in_one_window(seconds_needed: float = 20.0) -> None:
    """Wait for the next UTC minute when fewer than `seconds_needed` are left of this one, so a burst falls in one
    window."""
    left = 60 - time.time() % 60
    if left < seconds_needed:
        time.sleep(left + 0.05)


async def burst(gws, key: str, count: int, max_tokens: int = 5) -> list[httpx.Response]:
    """`count` requests at once, alternating between the gateway processes."""
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(
                    gws[i % len(gws)].url + "/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]},
                )
                for i in range(count)
            )
        )


def check_refusals(refused: list[httpx.Response], code: str, limit: int, what: str) -> None:
    for r in refused:
        error = r.json()["error"]
        assert (error["code"], error["type"]) == (code, "rate_limit_error"), error
        assert f"limited to {limit} {what} a minute" in error["message"]
        retry = int(r.headers["retry-after"])
        assert 1 <= retry <= 60
        assert r.headers[f"x-ratelimit-limit-{what}"] == str(limit)


def test_rpm_limit_holds_across_two_gateway_processes_under_concurrency(gateways):  # noqa: F811
    limit = 10
    _, _, key, created = funded_key(gateways[0], "50", label="rpm", rpm_limit=limit)
    assert created["rpm_limit"] == limit and created["tpm_limit"] is None
    in_one_window()
    responses = asyncio.run(burst(gateways, key, 3 * limit))
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(served), len(refused)) == (limit, 2 * limit), sorted(r.status_code for r in responses)
    # half the burst went to each process: with a counter per process each would have admitted `limit`
    assert sorted(r.url.port for r in responses).count(gateways[0].port) == 3 * limit // 2
    check_refusals(refused, "key_rpm_limit", limit, "requests")
    # every answer says what is left: each remaining count from limit-1 down to 0 once
    assert sorted(int(r.headers["x-ratelimit-remaining-requests"]) for r in served) == list(range(limit))
    for r in served:
        assert r.headers["x-ratelimit-limit-requests"] == str(limit)
        assert re.fullmatch(r"\d+(\.\d+)?s|\d+ms", r.headers["x-ratelimit-reset-requests"])
        assert "x-ratelimit-limit-tokens" not in r.headers  # no tpm_limit: no token headers
    assert all(r.headers["x-ratelimit-remaining-requests"] == "0" for r in refused)

    # the next minute has a fresh allowance
    time.sleep(60 - time.time() % 60 + 0.05)
    again = asyncio.run(burst(gateways, key, 2))
    assert [r.status_code for r in again] == [200, 200]


def test_tpm_limit_admits_on_the_bound_and_trues_up_to_the_usage(gateways, upstream):  # noqa: F811
    # each request's bound: its prompt bound (about 80 tokens here) + max_tokens 300; two fit in 1000, three do not
    limit = 1000
    _, _, key, _ = funded_key(gateways[0], "50", label="tpm", tpm_limit=limit)
    in_one_window(30)
    upstream.delay = 1.0  # no answer (and so no true-up) before the whole burst is admitted or refused
    try:
        responses = asyncio.run(burst(gateways, key, 6, max_tokens=300))
    finally:
        upstream.delay = 0.0
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert (len(served), len(refused)) == (2, 4), [r.status_code for r in responses]
    check_refusals(refused, "key_tpm_limit", limit, "tokens")
    assert "this request needs" in refused[0].json()["error"]["message"]
    assert "x-ratelimit-limit-requests" not in served[0].headers  # no rpm_limit: no request headers
    remaining = sorted(int(r.headers["x-ratelimit-remaining-tokens"]) for r in served)
    bound = limit - remaining[1]  # the first admitted left limit - bound
    assert remaining[0] == limit - 2 * bound and 300 < bound < 500

    # once answered, each counts its real usage (a few tokens), not its bound: more requests fit now
    used = sum(r.json()["usage"]["total_tokens"] for r in served)
    deadline = time.monotonic() + 5
    while True:
        (r,) = asyncio.run(burst(gateways[:1], key, 1, max_tokens=300))
        assert r.status_code == 200, r.text
        if int(r.headers["x-ratelimit-remaining-tokens"]) == limit - used - bound or time.monotonic() > deadline:
            break
        used += r.json()["usage"]["total_tokens"]  # trued up later, with the rest
    assert int(r.headers["x-ratelimit-remaining-tokens"]) == limit - used - bound

    # a request that alone needs more than the whole limit can never be admitted
    (too_big,) = asyncio.run(burst(gateways[:1], key, 1, max_tokens=2000))
    assert too_big.status_code == 429 and too_big.json()["error"]["code"] == "key_tpm_limit"
    assert "can never be admitted" in too_big.json()["error"]["message"]


def test_limits_are_changed_through_the_key_api_and_every_gateway_follows(gateways):  # noqa: F811
    _, token, key, created = funded_key(gateways[0], "50", label="change")
    owner = {"authorization": f"Bearer {token}"}
    url = f"{gateways[0].url}/api/keys/{created['id']}"
    in_one_window()
    for gw in gateways:  # no limits: no headers, and both processes hold the key
        (r,) = asyncio.run(burst([gw], key, 1))
        assert r.status_code == 200 and "x-ratelimit-limit-requests" not in r.headers

    for bad, field in (({"rpm_limit": 0}, "rpm_limit"), ({"tpm_limit": 10**10}, "tpm_limit")):
        refused = http_calls.patch(url, headers=owner, json=bad)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "invalid_key_settings" and field in refused.text
    changed = http_calls.patch(url, headers=owner, json={"rpm_limit": 1})
    assert changed.status_code == 200 and changed.json()["rpm_limit"] == 1
    assert http_calls.get(url, headers=owner).json()["rpm_limit"] == 1
    deadline = time.monotonic() + 5
    while True:  # the change reaches the other process through the event feed
        (r,) = asyncio.run(burst(gateways[1:], key, 1))
        if "x-ratelimit-limit-requests" in r.headers or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.headers["x-ratelimit-limit-requests"] == "1"
    statuses = [r.status_code, *(r.status_code for r in asyncio.run(burst(gateways, key, 2)))]
    assert statuses.count(200) <= 1 and 429 in statuses  # one a minute, whichever process admitted it

    cleared = http_calls.patch(url, headers=owner, json={"rpm_limit": None})
    assert cleared.status_code == 200 and cleared.json()["rpm_limit"] is None
    deadline = time.monotonic() + 5
    while True:
        responses = asyncio.run(burst(gateways, key, 2))
        if all(r.status_code == 200 for r in responses) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [r.status_code for r in responses] == [200, 200]
    assert all("x-ratelimit-limit-requests" not in r.headers for r in responses)


@pytest.mark.parametrize("fields", [{"rpm_limit": 0}, {"rpm_limit": 1_000_001}, {"tpm_limit": -1}, {"rpm_limit": 1.5}])
def test_out_of_range_limits_are_refused_at_creation(gateways, fields):  # noqa: F811
    signed_up = http_calls.post(
        gateways[0].url + "/api/signup", json={"email": f"{time.time_ns()}@example.com", "password": "correct horse"}
    )
    token = signed_up.json()["management_token"]
    refused = http_calls.post(
        gateways[0].url + "/api/keys", headers={"authorization": f"Bearer {token}"}, json={"label": "x", **fields}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["param"] == next(iter(fields))


def test_streams_and_embeddings_count_and_carry_the_headers(gateways):  # noqa: F811
    _, _, key, _ = funded_key(gateways[0], "50", label="kinds", rpm_limit=2, tpm_limit=100_000)
    auth = {"authorization": f"Bearer {key}"}
    in_one_window()
    body = {"model": MODEL, "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with http_calls.stream("POST", gateways[0].url + "/v1/chat/completions", headers=auth, json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-ratelimit-remaining-requests"] == "1"
        assert int(r.headers["x-ratelimit-remaining-tokens"]) < 100_000
        r.read()
    embedded = http_calls.post(
        gateways[1].url + "/v1/embeddings", headers=auth, json={"model": MODEL, "input": "hello"}, timeout=30
    )
    assert embedded.status_code == 200, embedded.text
    assert embedded.headers["x-ratelimit-remaining-requests"] == "0"
    refused = http_calls.post(
        gateways[0].url + "/v1/embeddings", headers=auth, json={"model": MODEL, "input": "hello"}, timeout=30
    )
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "key_rpm_limit"


def test_every_front_door_counts_against_the_keys_limit(gateways):  # noqa: F811
    """/v1/responses and /v1/messages are admitted as chat completions are: by the same counter, with the headers,
    and refused over the limit in their own error shape."""
    _, _, key, _ = funded_key(gateways[0], "5", label="doors", rpm_limit=2)
    auth = {"authorization": f"Bearer {key}"}
    in_one_window()
    answered = http_calls.post(
        gateways[0].url + "/v1/responses", headers=auth, json={"model": MODEL, "input": "hi", "max_output_tokens": 5}
    )
    assert answered.status_code == 200, answered.text
    assert answered.headers["x-ratelimit-remaining-requests"] == "1"
    message = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    second = http_calls.post(gateways[1].url + "/v1/messages", headers={"x-api-key": key}, json=message)
    assert second.status_code == 200, second.text
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    refused = http_calls.post(gateways[0].url + "/v1/messages", headers={"x-api-key": key}, json=message)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    body = refused.json()
    assert (body["type"], body["error"]["type"]) == ("error", "rate_limit_error")
    assert "limited to 2 requests a minute" in body["error"]["message"]
