"""Dashboard page loads at scale: server time of the pages an account opens most, with 1,000 API keys and
10,000 requests in its logs, beside the JSON API calls that return the same data.

Runs the real Runtime in this process on an embedded nats-server and PostgreSQL of its own (temp dirs): the
keys are created through the key commands, the requests are real UsageRecorded events on the stream, and the
read models are built by the projections. Each page is requested through the Litestar app in process (ASGI,
no network), so the time is the server's: handler, services, read-model queries, template rendering.

    python -m bench.dashboard [--keys 1000] [--requests 10000] [--samples 30]

Goal: every page <= 300 ms (p95).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from api.app import create_litestar
from api.dashboard.session import SESSION_COOKIE
from api.embedded import NatsServer
from api.postgres_server import PostgresServer
from api.read_models import BILLING, DIRECTORY, LOGS
from api.runtime import Runtime
from domain.pricing import Price
from domain.quota import Quotas
from domain.usage import UsageRecorded
from gateway.catalog import Catalog, Model

GOAL_MS = 300.0
MODELS = [f"mesh/bench-{i}" for i in range(6)]
PRICE = Price(500_000_000_000, 1_500_000_000_000)  # $0.5 / $1.5 per 1K tokens, in pico-USD
DAYS = 30


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def fill(runtime: Runtime, keys: int, requests: int) -> tuple[uuid.UUID, str]:
    session = await asyncio.to_thread(
        runtime.accounts.sign_up, f"bench-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
    )
    account = session.account_id
    started = time.monotonic()
    with ThreadPoolExecutor(1) as pool:  # one at a time: each key counts against the account's key quota
        created = list(
            pool.map(
                lambda i: runtime.keys.create(
                    account, f"key {i:04d}", 50 * 10**12 if i % 3 else None, MODELS[i % len(MODELS)]
                ),
                range(keys),
            )
        )
    print(f"created {keys:,} keys through the key commands in {time.monotonic() - started:.1f} s")
    rng, now = random.Random(7), datetime.now(timezone.utc)
    started = time.monotonic()
    position = max(c.position for c in created)
    for chunk in range(0, requests, 500):
        batch = []
        for _ in range(min(500, requests - chunk)):
            failed = rng.random() < 0.03
            prompt, completion = rng.randint(5, 4000), 0 if failed else rng.randint(1, 1500)
            latency = int(rng.lognormvariate(13.6, 0.9))
            model = MODELS[rng.randrange(len(MODELS))]
            batch.append(
                UsageRecorded(
                    trace_id=uuid.uuid4(),
                    account_id=account,
                    key_id=created[rng.randrange(keys)].key.id,
                    model=model,
                    requested_model=model,
                    provider="mesh",
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    prompt_per_1k=PRICE.prompt_per_1k,
                    completion_per_1k=PRICE.completion_per_1k,
                    cost=0 if failed else PRICE.cost(prompt, completion),
                    status="error" if failed else "ok",
                    http_status=502 if failed else 200,
                    latency_us=latency,
                    upstream_us=latency * 9 // 10,
                    first_token_us=None,
                    stream=False,
                    error="provider failed with HTTP 500" if failed else None,
                    timestamp=now - timedelta(seconds=rng.randrange(DAYS * 86_400)),
                )
            )
        await runtime.usage._publish(batch)
    info = await runtime.nc.jetstream().stream_info(runtime.stream)
    position = max(position, info.state.last_seq)
    for model in (DIRECTORY, BILLING, LOGS):
        await runtime.waiter.caught_up(model, position)
    print(f"published {requests:,} usage events and projected them in {time.monotonic() - started:.1f} s")
    return account, session.management_token


async def measure(client: httpx.AsyncClient, path: str, samples: int, headers: dict) -> list[float]:
    times = []
    for i in range(samples + 2):
        started = time.perf_counter()
        r = await client.get(path, headers=headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        if i >= 2:  # warm-up: first compile of templates, pool connections
            times.append(elapsed)
    return times


async def run(args) -> None:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-dashboard-") as tmp:
        nats = NatsServer(Path(tmp) / "nats").start()
        postgres = PostgresServer(Path(tmp) / "pg").start()
        catalog = Catalog([], [Model(m, "mesh", "echo", PRICE) for m in MODELS])
        runtime = Runtime(
            nats_url=nats.url,
            database_url=postgres.url,
            catalog=catalog,
            operator_token="mo-bench",
            spool_dir=Path(tmp) / "spool",
            quotas=Quotas(keys=max(args.keys, Quotas().keys)),  # one account holds every key
        )
        try:
            await runtime.start()
            account, token = await fill(runtime, args.keys, args.requests)
            app = create_litestar(runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://mesh", timeout=60) as client:
                page = {"cookie": f"{SESSION_COOKIE}={token}"}
                api = {"authorization": f"Bearer {token}"}
                rows = [
                    ("API Keys page  GET /keys", "/keys", page, "GET /api/keys", "/api/keys"),
                    ("Logs page      GET /logs", "/logs?range=30d", page, "GET /api/logs", "/api/logs?limit=50"),
                    (
                        "Billing page   GET /billing",
                        "/billing",
                        page,
                        "GET /api/billing/spend",
                        "/api/billing/spend?group_by=day,model",
                    ),
                    (
                        "Billing by key  GET /billing",
                        "/billing?range=90d&by=key&series=tokens",
                        page,
                        "GET /api/billing/spend",
                        "/api/billing/spend?group_by=day,key",
                    ),
                    (
                        "Billing latency GET /billing",
                        "/billing?range=90d&series=latency",
                        page,
                        "GET /api/logs",
                        "/api/logs?limit=50",
                    ),
                    ("Models page    GET /models", "/models", page, "GET /api/models", "/api/models"),
                    ("Templates page GET /templates", "/templates", page, "GET /api/templates", "/api/templates"),
                ]
                shown = (await client.get("/keys", headers=page)).text.count('<a href="/keys/')
                listed = len((await client.get("/api/keys", headers=api)).json()["data"])
                logged = (await client.get("/logs?range=30d", headers=page)).text.count('<a href="/logs/')
                assert shown == listed == args.keys, (shown, listed)
                print(f"the pages show {shown:,} keys and a first page of {logged} requests")
                print(
                    f"\n{args.keys:,} keys, {args.requests:,} requests in one account; {args.samples} samples each "
                    f"(in-process ASGI: server time)\n"
                )
                print(
                    f"{'page':32} {'p50 ms':>8} {'p95 ms':>8}   {'reference (same data, JSON)':30} {'p50 ms':>8} "
                    f"{'p95 ms':>8}  {'page/ref':>8}  goal p95 <= {GOAL_MS:.0f} ms"
                )
                for name, path, headers, ref_name, ref_path in rows:
                    pages = await measure(client, path, args.samples, headers)
                    refs = await measure(client, ref_path, args.samples, api)
                    verdict = "ok" if p(pages, 95) <= GOAL_MS else "SLOW"
                    print(
                        f"{name:32} {p(pages, 50):8.1f} {p(pages, 95):8.1f}   {ref_name:30} {p(refs, 50):8.1f} "
                        f"{p(refs, 95):8.1f}  {p(pages, 50) / p(refs, 50):7.2f}x  {verdict}"
                    )
        finally:
            await runtime.stop()
            postgres.stop()
            nats.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=30)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
