"""`mesh audit verify` on a real nats-server: a log written by the commands and the usage publisher holds every
invariant; a usage event charged a price not in force (published as the gateway would) is named."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import nats
import pytest

from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.keys import KeyCommands
from commands.leasing import BudgetCommands
from commands.stream import ensure_stream
from domain.pricing import Price
from domain.usage import UsageRecorded
from gateway.usage import UsagePublisher
from projections.audit_verify import verify_log

from tests.conftest import TEST_KDF

pytestmark = pytest.mark.integration

PRICES = {"acme/m": Price(500_000_000_000, 1_500_000_000_000)}


def usage(account_id, key_id, lease_id, price: Price) -> UsageRecorded:
    return UsageRecorded(
        trace_id=uuid.uuid4(),
        account_id=account_id,
        key_id=key_id,
        model="acme/m",
        requested_model=None,
        provider="acme",
        prompt_tokens=1,
        completion_tokens=2,
        prompt_per_1k=price.prompt_per_1k,
        completion_per_1k=price.completion_per_1k,
        cost=price.cost(1, 2),
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=1000,
        lease_id=lease_id,
    )


async def test_verify_holds_on_a_clean_log_and_names_a_usage_at_a_price_not_in_force(nats_url, stream_name, tmp_path):
    nc = await nats.connect(nats_url)
    await ensure_stream(nc, stream_name)
    app = await asyncio.to_thread(MeshApplication, nats_url, stream_name)
    publisher = UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    try:
        accounts, budget = AccountCommands(app, password_kdf=TEST_KDF), BudgetCommands(app)
        session = await asyncio.to_thread(accounts.sign_up, f"v-{uuid.uuid4().hex[:6]}@example.com", "long enough")
        account_id = session.account_id
        await asyncio.to_thread(accounts.grant_credits, account_id, 10**13, "seed", "test")
        key = await asyncio.to_thread(KeyCommands(app).create, account_id, "k", 10**12, None)
        key_id = key.key.id
        grant = await asyncio.to_thread(budget.lease, account_id, key_id, 10**11, 10**9, timedelta(minutes=5))
        paid = [usage(account_id, key_id, grant.lease_id, PRICES["acme/m"]) for _ in range(3)]
        for event in paid:
            await publisher.publish(event)
        await asyncio.to_thread(budget.settle, account_id, key_id, grant.lease_id, sum(e.cost for e in paid))

        found, events = await verify_log(nc, stream_name, PRICES)
        assert found == [] and events > 8

        second = await asyncio.to_thread(budget.lease, account_id, key_id, 10**11, 10**9, timedelta(minutes=5))
        cheap = usage(account_id, key_id, second.lease_id, Price(100_000_000_000, 1_500_000_000_000))
        await publisher.publish(cheap)
        found, _ = await verify_log(nc, stream_name, PRICES)
        assert [(v.invariant, v.subject, v.account_id) for v in found] == [
            ("price", f"usage {cheap.trace_id}", account_id)
        ]
        assert "charged prompt 100000000000" in found[0].line()

        # the log as it stood before that event still holds
        found, _ = await verify_log(nc, stream_name, PRICES, at=cheap.timestamp - timedelta(microseconds=1))
        assert found == []
    finally:
        await asyncio.to_thread(app.close)
        await nc.close()
