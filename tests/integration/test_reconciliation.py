"""Reconciliation: a random mix of 10,000+ usage events, top-ups, refunds and duplicates; the balances,
the balance at past instants and the spend history agree with a running sum kept by the test, and a
rebuild from position 0 into fresh tables reproduces them to the last unit."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from datetime import datetime, timezone

import msgspec
import nats
from psycopg_pool import AsyncConnectionPool

from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.stream import ensure_stream
from commands.topups import TopUpCommands
from domain.events import usage_subject
from domain.usage import UsageRecorded
from gateway.usage import UsagePublisher
from projections import billing
from projections.billing_projection import Billing
from projections.readmodel import ensure_schema
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.source import StreamSource
from projections.spend_history import spend_history

from tests.conftest import TEST_KDF

BILLING = Billing()
USAGE_EVENTS = 10_000
CENT = 10**10


async def snapshot(pool, accounts) -> tuple[dict, list]:
    async with pool.connection() as conn:
        balances = {a: await billing.balance_of(conn, a) for a in accounts}
        history = {a: await spend_history(conn, a, ["model", "key", "day"], None, None) for a in accounts}
    return balances, history


async def test_replaying_everything_gives_the_same_money_to_the_last_unit(
    nats_url, database_url, stream_name, tmp_path
):
    nc = await nats.connect(nats_url)
    await ensure_stream(nc, stream_name)
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await ensure_schema(conn, [BILLING])
    app = await asyncio.to_thread(MeshApplication, nats_url, stream_name)
    accounts_cmd, topups = AccountCommands(app, password_kdf=TEST_KDF), TopUpCommands(app)
    publisher = UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    rng = random.Random(2026)

    accounts = []
    for i in range(10):
        session = await asyncio.to_thread(
            accounts_cmd.sign_up, f"r{i}-{uuid.uuid4().hex[:6]}@example.com", "long enough"
        )
        accounts.append(session.account_id)
    keys = {a: [uuid.uuid4(), uuid.uuid4()] for a in accounts}
    expected: dict[uuid.UUID, int] = defaultdict(int)  # the test's own running balance
    checkpoints: list[tuple[datetime, dict]] = []
    paid: list[tuple[uuid.UUID, str, int]] = []
    published: list[UsageRecorded] = []

    async def top_up(account):
        reference = "pi_" + uuid.uuid4().hex[:16]
        amount = rng.randint(500, 50_000) * CENT
        await asyncio.to_thread(topups.request, account, "stripe", reference, amount)
        for _ in range(rng.choice([1, 1, 2, 3])):  # webhooks come more than once
            await asyncio.to_thread(topups.confirm, "stripe", reference, amount, "stripe")
        expected[account] += amount
        paid.append((account, reference, amount))

    async def refund():
        account, reference, amount = rng.choice(paid)
        total = rng.randint(1, amount // CENT) * CENT
        before = (await asyncio.to_thread(topups.load, "stripe", reference)).refunded
        for _ in range(rng.choice([1, 2])):
            await asyncio.to_thread(topups.refund, "stripe", reference, total, "stripe")
        expected[account] -= max(0, total - before)

    for account in accounts:
        await top_up(account)
    for n in range(USAGE_EVENTS):
        account = rng.choice(accounts)
        event = UsageRecorded(
            trace_id=uuid.uuid4(),
            account_id=account,
            key_id=rng.choice(keys[account]),
            model=rng.choice(["a/small", "a/large", "b/mid"]),
            requested_model=None,
            provider="p",
            prompt_tokens=rng.randint(1, 4000),
            completion_tokens=rng.randint(0, 2000),
            prompt_per_1k=0,
            completion_per_1k=0,
            cost=rng.randint(0, 5 * 10**9),
            status=rng.choice(["ok"] * 9 + ["error"]),
            http_status=200,
            timestamp=datetime.now(timezone.utc),
            latency_us=1,
        )
        await publisher.publish(event)
        published.append(event)
        expected[account] -= event.cost
        if n % 100 == 0:
            await top_up(rng.choice(accounts))
        if n % 250 == 0:
            await refund()
        if n % 1000 == 999:
            checkpoints.append((datetime.now(timezone.utc), dict(expected)))
    # duplicates past JetStream's dedup window: the same trace ids as new messages
    for event in rng.sample(published, 300):
        await nc.jetstream().publish(
            usage_subject(stream_name, event.account_id),
            msgspec.json.encode(event),
            headers={
                "Mesh-Topic": "usage.recorded",
                "Mesh-Originator-Id": str(event.trace_id),
                "Mesh-Originator-Version": "1",
            },
        )

    live = ProjectionRunner(BILLING, StreamSource(nc, stream_name), pool)
    head = await live.catch_up()
    assert head > USAGE_EVENTS + 300
    balances, history = await snapshot(pool, accounts)
    assert {a: b.available for a, b in balances.items()} == dict(expected)
    for account in accounts:
        assert sum(row.spend for row in history[account]) == balances[account].spend
    async with pool.connection() as conn:
        for moment, running in checkpoints:
            for account in accounts:
                assert (await billing.balance_at(conn, account, moment)).available == running.get(account, 0)

    generation = await rebuild(BILLING, nc, pool, stream_name)
    assert generation == 2
    assert await snapshot(pool, accounts) == (balances, history)

    await asyncio.to_thread(app.close)
    await pool.close()
    await nc.close()
