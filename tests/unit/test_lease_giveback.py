"""A process's own leases never make a request the remaining budget covers fail or shrink (gateway/lease_admission.py):
idle leases are given back before a new one is sized, and a refusal says what the whole budget still allows."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.leases import LeaseBook, LeaseGrant, lease_amount
from gateway.admission import KeyInfo
from gateway.lease_admission import BudgetRefusal, Budgets

WORST = 1_000


class BookBroker:
    """Leases from one account's credits by the domain's own rules (lease_amount, LeaseBook), in memory."""

    def __init__(self, credits: int):
        self.credits = credits
        self.book = LeaseBook()
        self.settled: list[int] = []

    @property
    def available(self) -> int:
        return self.credits - self.book.settled - self.book.reserved

    async def acquire(self, account_id, key_id, wanted, minimum):
        amount = lease_amount(
            wanted,
            minimum,
            None,
            self.available,
            None,
            0,
            self.credits,
            self.book.settled + self.book.reserved,
            0,
            self.book.reserved,
        )
        grant = LeaseGrant(uuid.uuid4(), amount, datetime.now(timezone.utc) + timedelta(minutes=15))
        self.book.grant(grant.lease_id, amount, grant.expires_at)
        return grant

    async def settle(self, account_id, key_id, lease_id, spent):
        if self.book.must_settle(lease_id, spent):
            self.book.settle(lease_id, spent)
            self.settled.append(spent)


def key() -> KeyInfo:
    return KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None)


def test_sequential_requests_get_their_whole_worst_case_while_the_budget_covers_it():
    cost = 600  # each request really spends most of its worst case, so leases run out often
    broker = BookBroker(credits=30 * cost + WORST)
    budgets = Budgets(broker, lease_multiple=4, patience=0)  # no waiting: only the real budget may decide

    async def run() -> None:
        info = key()
        for _ in range(30):
            ticket = await budgets.reserve(info, WORST, WORST)
            assert ticket.amount == WORST
            budgets.release(ticket, cost)
        assert (
            broker.available + sum(lease.free for lease in [budgets._keys[info.key_id].current] if lease) == WORST
        )  # all that is left is one worst case
        ticket = await budgets.reserve(info, WORST, WORST)  # the 31st is still covered
        budgets.release(ticket, cost)
        with pytest.raises(BudgetRefusal) as refused:
            await budgets.reserve(info, WORST, WORST)
        assert refused.value.available == WORST - cost  # the whole remaining budget, own leases given back

    asyncio.run(run())


def test_a_refusal_counts_what_the_own_busy_lease_still_holds():
    broker = BookBroker(credits=3 * WORST)
    budgets = Budgets(broker, lease_multiple=2, patience=0)  # leases of two requests

    async def run() -> None:
        info = key()
        busy = await budgets.reserve(info, WORST // 2, WORST // 2)  # in flight: its lease stays open
        with pytest.raises(BudgetRefusal) as refused:
            await budgets.reserve(info, 3 * WORST, 3 * WORST)
        lease = budgets._keys[info.key_id].current
        assert lease.free == WORST // 2  # leased for two requests, one in flight
        assert refused.value.available == broker.available + lease.free == 3 * WORST - WORST // 2
        budgets.release(busy, 0)

    asyncio.run(run())
