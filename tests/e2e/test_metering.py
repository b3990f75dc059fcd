"""Exact metering through `mesh up` with the openai SDK: cached and cache-write prompt tokens billed at the model's
cache prices and reasoning billed as completion, for each provider's own wire format (plain and streamed); a
stream that runs longer than a budget lease lives is still billed on that lease; a lease a stopped process left
on the account alone is reaped."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from uuid import UUID, uuid4

import nats
import openai
import pytest

from commands.app import MeshApplication
from domain.account import Account
from tests.e2e.conftest import MeshProcess, funded_key
from tests.e2e.test_gateway import usage_row
from tests.e2e.test_walking_skeleton import api, sign_up, wait_for_balance
from tests.fakes.caching import MESSAGES, REPORTED, caching_fakes
from tests.fakes.server import BackgroundServer

LEASE_SECONDS = 4  # so a stream of ~10 s outlives two lease lives and the reaper's grace (2 s)

# model -> (USD per 1K: prompt, completion, cached read, cache write; tokens one request over MESSAGES bills as
#           (fresh prompt, cache read, cache write, completion, reasoning) by what its fake reports)
MODELS = {
    "oai/gpt": (("2", "8", "0.5", None), REPORTED["openai"]),
    "claude/sonnet": (("3", "15", "0.3", "3.75"), REPORTED["anthropic"]),
    "google/flash": (("0.3", "2.5", "0.075", None), REPORTED["gemini"]),
}


def request_cost(model: str) -> Decimal:
    (prompt, completion, cached, write), (fresh, read, written, out, _) = MODELS[model]
    return (
        fresh * Decimal(prompt)
        + read * Decimal(cached)
        + written * Decimal(write or prompt)
        + out * Decimal(completion)
    ) / 1000


@pytest.fixture(scope="module")
def metered(tmp_path_factory):
    kinds = caching_fakes()
    fakes = {"oai": kinds["openai"], "claude": kinds["anthropic"], "google": kinds["gemini"]}
    with (
        BackgroundServer(fakes["oai"]) as oai,
        BackgroundServer(fakes["claude"]) as claude,
        BackgroundServer(fakes["google"]) as google,
    ):
        base = tmp_path_factory.mktemp("metering")
        config = base / "mesh.toml"
        models = ""
        for model, ((prompt, completion, cached, write), _) in MODELS.items():
            models += f"""
[[models]]
id = "{model}"
provider = "{model.split("/")[0]}"
upstream = "{model.split("/")[1]}-1"
prompt_usd_per_1k = "{prompt}"
completion_usd_per_1k = "{completion}"
cached_prompt_usd_per_1k = "{cached}"
""" + (f'cache_write_usd_per_1k = "{write}"\n' if write else "")
        config.write_text(f"""
[providers.oai]
kind = "openai"
base_url = "{oai.url}/v1"

[providers.claude]
kind = "anthropic"
base_url = "{claude.url}/v1"

[providers.google]
kind = "gemini"
base_url = "{google.url}/v1beta"
{models}""")
        mesh = MeshProcess(base / "data", config, {"MESH_LEASE_TTL_SECONDS": str(LEASE_SECONDS)})
        mesh.start()
        yield mesh, fakes
        mesh.stop()


def test_models_show_their_cache_prices(metered):
    mesh, _ = metered
    _, token = sign_up(mesh)
    listed = {m["id"]: m for m in api(mesh, "GET", "/api/models", token).json()["data"]}
    assert (listed["claude/sonnet"]["cached_prompt_usd_per_1k"], listed["claude/sonnet"]["cache_write_usd_per_1k"]) == (
        "0.300000",
        "3.750000",
    )
    assert listed["oai/gpt"]["cache_write_usd_per_1k"] == "2.000000"  # none set: the prompt price


def test_the_operator_changes_a_cache_price_at_runtime(metered):
    mesh, _ = metered
    operator = mesh.operator_token
    _, token, key, _ = funded_key(mesh, "10", label="metering")
    try:
        changed = api(mesh, "PUT", "/admin/models/google/flash", operator, json={"cached_prompt_usd_per_1k": "0.01"})
        assert changed.status_code == 200, changed.text
        assert (
            changed.json()["cached_prompt_usd_per_1k"],
            changed.json()["prompt_usd_per_1k"],
            changed.json()["cache_write_usd_per_1k"],
        ) == ("0.010000", "0.300000", "0.300000")
        listed = {m["id"]: m for m in api(mesh, "GET", "/api/models", token).json()["data"]}
        assert listed["google/flash"]["cached_prompt_usd_per_1k"] == "0.010000"
        refused = api(
            mesh, "PUT", "/admin/models/google/flash", operator, json={"cache_write_usd_per_1k": "0.0000000001"}
        )
        assert refused.status_code == 400 and "at most 9 decimal places" in refused.text
        client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
        client.chat.completions.create(model="google/flash", messages=MESSAGES, max_tokens=100)
        _, (fresh, read, _, out, _) = MODELS["google/flash"]
        spent = (fresh * Decimal("0.3") + read * Decimal("0.01") + out * Decimal("2.5")) / 1000
        assert Decimal(wait_for_balance(mesh, token, Decimal(10) - spent)["balance_usd"]) == Decimal(10) - spent
    finally:
        api(mesh, "PUT", "/admin/models/google/flash", operator, json={"cached_prompt_usd_per_1k": "0.075"})


@pytest.mark.parametrize("model", list(MODELS))
def test_cached_tokens_are_billed_at_the_cache_price(metered, model):
    mesh, _ = metered
    _, token, key, _ = funded_key(mesh, "10", label="metering")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    _, (fresh, read, written, out, reasoning) = MODELS[model]
    plain = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=100)
    assert (plain.usage.prompt_tokens, plain.usage.completion_tokens) == (fresh + read + written, out)
    assert plain.usage.prompt_tokens_details.cached_tokens == read
    chunks = list(
        client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=100, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == read
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (fresh + read + written, out)
    assert plain.usage.completion_tokens_details.reasoning_tokens == reasoning  # 0 for Anthropic: not counted apart
    expected = Decimal(10) - 2 * request_cost(model)
    body = wait_for_balance(mesh, token, expected)
    assert Decimal(body["balance_usd"]) == expected
    (prompt, completion, _, _), _ = MODELS[model]  # every prompt token at the prompt price would cost more
    assert request_cost(model) < ((fresh + read + written) * Decimal(prompt) + out * Decimal(completion)) / 1000


def lease_events(mesh: MeshProcess, account_id: str, lease_id: str) -> list[tuple[str, dict]]:
    """The account's events about one lease, from the stream itself."""
    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]

    async def read() -> list[tuple[str, dict]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            last = (await js.stream_info("MESH")).state.last_seq
            found = []
            for seq in range(1, last + 1):
                msg = await js.get_msg("MESH", seq)
                if msg.subject == f"mesh.agg.{account_id}":
                    body = json.loads(msg.data)
                    if body.get("lease_id") == lease_id:
                        found.append((msg.headers["Mesh-Topic"], body))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_stream_running_past_its_lease_is_still_billed_on_it(metered):
    mesh, fakes = metered
    fake = fakes["oai"]
    fake.chunk_delay = 1.0  # ~10 frames: about 10 s, against leases of 4 s (reaper grace 2 s)
    try:
        account_id, token, key, _ = funded_key(mesh, "10", label="metering")
        client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0, timeout=60)
        started = time.monotonic()
        stream = client.chat.completions.create(model="oai/gpt", messages=MESSAGES, max_tokens=100, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        trace = stream.response.headers["x-mesh-trace-id"]
    finally:
        fake.chunk_delay = 0.0
    assert text == "w0 w1 w2 w3 w4 w5 w6" and time.monotonic() - started > 2 * LEASE_SECONDS
    row = usage_row(mesh, trace)
    assert row["status"] == "ok" and not row["estimated"]
    assert Decimal(row["cost"]) == request_cost("oai/gpt") * 10**12
    wait_for_balance(mesh, token, Decimal(10) - request_cost("oai/gpt"))
    lease = str(row["lease_id"])
    deadline = time.monotonic() + 15
    while True:  # the gateway settles it once the stream is over and the lease idle
        events = lease_events(mesh, account_id, lease)
        settled = [body for topic, body in events if topic == "account.lease_settled"]
        if settled or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    topics = [topic for topic, _ in events]
    assert topics[0] == "account.budget_leased" and "account.lease_extended" in topics
    assert len(settled) == 1 and settled[0]["spent"] == row["cost"]  # not 0, as a reaper would have settled it


def test_a_lease_left_on_the_account_alone_is_reaped_after_expiry(metered):
    """A gateway process stopped between a lease's two appends (the account's, then the key's) leaves the lease on
    the account alone: the reaper settles it there after expiry and grace, and the key's budget is untouched."""
    mesh, _ = metered
    account_id, token, key, _ = funded_key(mesh, "10", label="metering")
    key_id = api(mesh, "GET", "/api/keys", token).json()["data"][0]["id"]
    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]
    app = MeshApplication(nats_url, "MESH")
    try:
        account: Account = app.repository.get(UUID(account_id))
        lease_id = uuid4()
        account.lease(lease_id, 4 * 10**12, UUID(key_id), datetime.now(timezone.utc) + timedelta(seconds=1))
        app.save(account)  # ... and the process stops before the key's part
        deadline = time.monotonic() + 20
        while lease_id in app.repository.get(UUID(account_id)).leases.open and time.monotonic() < deadline:
            time.sleep(0.5)
        account = app.repository.get(UUID(account_id))
        assert lease_id not in account.leases.open and account.leasable == 10 * 10**12
        assert [topic for topic, _ in lease_events(mesh, account_id, str(lease_id))] == [
            "account.budget_leased",
            "account.lease_settled",
        ]
        assert not app.repository.get(UUID(key_id)).leases.open
    finally:
        app.close()
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="oai/gpt", messages=MESSAGES, max_tokens=100)
    expected = Decimal(10) - request_cost("oai/gpt")
    assert Decimal(wait_for_balance(mesh, token, expected)["balance_usd"]) == expected
