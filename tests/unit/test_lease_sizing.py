"""The gateway's lease sizing (gateway/leases.py `KeyLeases.adapt`): busy keys lease for seconds of traffic, quiet ones
for little."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from gateway import lease_admission as budget_module
from gateway import leases
from gateway.admission import KeyInfo
from domain.leases import LeaseGrant
from gateway.lease_admission import Budgets

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


class Clock:
    """The gateway's monotonic clock, moved by hand."""

    def __init__(self, monkeypatch):
        self.now = 1_000.0
        monkeypatch.setattr(budget_module.time, "monotonic", lambda: self.now)


def test_a_key_that_uses_its_leases_up_quickly_gets_leases_sized_from_its_rate(monkeypatch):
    """A lease used up in a quarter of the aim's lower end: the next one covers four times as many requests (the
    rate it went, for the aim); one used up a little early still gets twice as many."""
    clock, broker = Clock(monkeypatch), CountingBroker()
    budgets = Budgets(broker, lease_multiple=4)
    info = key()
    asyncio.run(spend(budgets, info, 4))
    clock.now += leases.LEASE_AIM[0] / 4
    asyncio.run(spend(budgets, info, 16))
    clock.now += leases.LEASE_AIM[0] * 0.9
    asyncio.run(spend(budgets, info, 1))
    assert broker.wanted == [4 * WORST_CASE, 16 * WORST_CASE, 32 * WORST_CASE]


def test_a_burst_gets_a_lease_for_its_rate_at_once_up_to_the_cap(monkeypatch):
    """Used up at once (no time passed): the largest multiple, not a dozen doublings one lease at a time."""
    Clock(monkeypatch)
    broker = CountingBroker()
    budgets = Budgets(broker, lease_multiple=4)
    asyncio.run(spend(budgets, key(), 5))
    assert broker.wanted == [4 * WORST_CASE, leases.MAX_MULTIPLE * WORST_CASE]


def test_a_key_whose_leases_last_long_gets_smaller_ones_again(monkeypatch):
    clock, broker = Clock(monkeypatch), CountingBroker()
    budgets = Budgets(broker, lease_multiple=4)
    info = key()
    asyncio.run(spend(budgets, info, 4))
    clock.now += leases.LEASE_AIM[0] / 4
    asyncio.run(spend(budgets, info, 16))  # a lease of 16 requests, used up at once
    assert broker.wanted[-1] == 16 * WORST_CASE
    clock.now += leases.LEASE_AIM[1] + 1  # the last lease then lasts long
    asyncio.run(spend(budgets, info, 1))
    assert broker.wanted[-1] == 8 * WORST_CASE
