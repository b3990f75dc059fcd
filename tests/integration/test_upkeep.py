"""The periodic jobs (api/upkeep.py) on real NATS and PostgreSQL: a bank transfer past its deadline expires and one
still in time stays pending; a lease whose holder vanished is settled, one still in its life is left alone."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from api.upkeep import Upkeep
from commands.keys import KeyCommands
from commands.leasing import BudgetCommands
from commands.topups import TopUpCommands
from tests.integration.test_logs import BILLING, accounts, catch_up, env  # noqa: F401

LEASE_LIFE = timedelta(seconds=1)  # the reaper's grace is half of it


def upkeep(pool, app) -> Upkeep:
    return Upkeep(pool, BudgetCommands(app), TopUpCommands(app), LEASE_LIFE, asyncio.Event())


async def test_bank_transfers_past_their_deadline_expire_and_the_others_stay_pending(env):
    nc, pool, app, publisher = env
    (account_id,) = await accounts(app, 1)
    topups = TopUpCommands(app)
    now = datetime.now(timezone.utc)
    late, in_time = (f"MESH-{uuid.uuid4().hex[:8].upper()}" for _ in range(2))
    await asyncio.to_thread(topups.request, account_id, "bank_transfer", late, 5 * 10**12, now - timedelta(seconds=1))
    await asyncio.to_thread(topups.request, account_id, "bank_transfer", in_time, 5 * 10**12, now + timedelta(hours=1))
    await catch_up(nc, pool, publisher.stream, BILLING)
    await upkeep(pool, app).expire_topups()
    assert (await asyncio.to_thread(topups.load, "bank_transfer", late)).status == "expired"
    assert (await asyncio.to_thread(topups.load, "bank_transfer", in_time)).status == "pending"


async def test_a_lease_past_its_expiry_and_grace_is_settled_and_a_live_one_is_not(env):
    nc, pool, app, publisher = env
    (account_id,) = await accounts(app, 1)
    key_id = (await asyncio.to_thread(KeyCommands(app).create, account_id, "k", 10**12, None)).key.id
    budget = BudgetCommands(app)
    vanished = await asyncio.to_thread(budget.lease, account_id, key_id, 10**9, 1, LEASE_LIFE)
    await asyncio.sleep(LEASE_LIFE.total_seconds() * 1.6)  # past its expiry and the grace
    live = await asyncio.to_thread(budget.lease, account_id, key_id, 10**9, 1, timedelta(hours=1))
    await catch_up(nc, pool, publisher.stream, BILLING)
    await upkeep(pool, app).reap_expired_leases()
    account = await asyncio.to_thread(app.repository.get, account_id)
    assert vanished.lease_id not in account.leases.open and live.lease_id in account.leases.open
