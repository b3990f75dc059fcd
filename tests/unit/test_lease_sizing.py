"""The gateway's lease sizing (gateway/budget.py): busy keys lease for seconds of traffic, quiet ones for little."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from gateway import budget as budget_module
from gateway.admission import KeyInfo
from gateway.budget import Budgets, LeaseGrant

WORST_CASE = 1_000


class CountingBroker:
    """Grants what it is asked for and remembers each grant (the limits themselves are the domain's tests)."""

    def __init__(self):
        self.wanted: list[int] = []

    async def acquire(self, account_id, key_id, wanted, minimum):
        self.wanted.append(wanted)
        return LeaseGrant(uuid.uuid4(), wanted, datetime.now(timezone.utc) + timedelta(minutes=15))

    async def settle(self, account_id, key_id, lease_id, spent):
        pass


def key() -> KeyInfo:
    return KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None)


async def spend(budgets: Budgets, info: KeyInfo, requests: int) -> None:
    for _ in range(requests):
        ticket = await budgets.reserve(info, WORST_CASE, WORST_CASE)
        budgets.release(ticket, WORST_CASE)


def test_a_key_that_uses_its_leases_up_quickly_gets_larger_ones():
    broker = CountingBroker()
    budgets = Budgets(broker, lease_multiple=4)
    asyncio.run(spend(budgets, key(), 4 * (1 + 2 + 4 + 8)))
    assert broker.wanted == [4 * WORST_CASE, 8 * WORST_CASE, 16 * WORST_CASE, 32 * WORST_CASE]


def test_a_key_whose_leases_last_long_gets_smaller_ones_again(monkeypatch):
    broker = CountingBroker()
    budgets = Budgets(broker, lease_multiple=4)
    info = key()
    asyncio.run(spend(budgets, info, 4 + 8 + 16))  # leases of 4, 8, 16 requests, each used up at once
    assert broker.wanted[-1] == 16 * WORST_CASE
    clock = budget_module.time.monotonic() + budget_module.LEASE_AIM[1] + 1  # the last lease then lasts long
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: clock)
    asyncio.run(spend(budgets, info, 1))
    assert broker.wanted[-1] == 8 * WORST_CASE
