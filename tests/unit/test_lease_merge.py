"""A request is admitted on the free parts of several of the process's own leases (gateway/lease_admission.py):
a retired lease still running a long request never makes a request the remaining budget covers wait, shrink or fail, and
every lease is settled with exactly what its parts cost, never more than it was granted."""

import asyncio

import pytest

from domain.leases import BudgetExceeded
from gateway.lease_admission import BudgetRefusal, Budgets, LeaseUnavailable
from tests.unit.test_lease_giveback import BookBroker, key


class LedgerBroker(BookBroker):
    """BookBroker that also keeps what each lease was granted and settled with."""

    def __init__(self, credits: int):
        super().__init__(credits)
        self.granted: dict = {}
        self.settled_by_lease: dict = {}
        self.passing_failures = 0  # grants to turn into a passing failure (another writer won)

    async def acquire(self, account_id, key_id, wanted, minimum):
        grant = await super().acquire(account_id, key_id, wanted, minimum)
        if self.passing_failures:
            self.passing_failures -= 1
            self.book.settle(grant.lease_id, 0)  # never granted after all
            raise LeaseUnavailable()
        self.granted[grant.lease_id] = grant.amount
        return grant

    async def settle(self, account_id, key_id, lease_id, spent):
        if lease_id in self.book.open:
            self.settled_by_lease[lease_id] = spent
        await super().settle(account_id, key_id, lease_id, spent)


def with_a_long_request_on_a_retired_lease(check) -> None:
    """A long request (1000 of a 2000 lease) keeps lease 1 open after it is retired for a 1500 request; that one
    ends and its lease is given back. Left: 4000 - 1500 spent - 1000 reserved = 1500 of real budget, of which 1000
    is lease 1's free part and 500 what the limits still give a new lease. No waiting: only merging can admit."""
    broker = LedgerBroker(credits=4000)
    budgets = Budgets(broker, lease_multiple=2, patience=0)

    async def run() -> None:
        info = key()
        stream = await budgets.reserve(info, 1000, 1000)
        first = stream.lease
        assert first.amount == 2000 and first.free == 1000
        other = await budgets.reserve(info, 1500, 1500)
        assert other.lease is not first and first in budgets._keys[info.key_id].retired
        budgets.release(other, 1500)
        await check(broker, budgets, info, stream, first)

    asyncio.run(run())


def test_a_request_the_budget_covers_only_with_a_retired_leases_free_part_is_admitted_at_once_in_full():
    async def check(broker, budgets, info, stream, first) -> None:
        ticket = await budgets.reserve(info, 1200, 1200)  # 1000 free on lease 1 + 200 of a new lease
        assert ticket.amount == 1200
        assert [(lease is first, amount) for lease, amount in ticket.parts] == [(True, 1000), (False, 200)]
        new = ticket.parts[1][0]
        assert broker.granted[new.id] == 250  # half of the 500 the limits leave, at least the 200 it lacks
        assert first.free == 0 and first.inflight == 2 and new.free == 50

        budgets.release(ticket, 1100)  # fills lease 1's part, then 100 of the new lease's
        assert (first.spent, first.reserved, first.inflight) == (1000, 1000, 1)
        assert (new.spent, new.reserved, new.inflight) == (100, 0, 0)
        assert first.id not in broker.settled_by_lease  # the long request still runs on it

        budgets.release(stream, 600)  # its last request: lease 1 is settled
        await asyncio.sleep(0)
        assert broker.settled_by_lease[first.id] == 1600
        await budgets.sweep(everything=True)
        assert broker.settled_by_lease[new.id] == 100
        assert not broker.book.open
        assert sum(broker.settled) == 1500 + 1100 + 600 == broker.book.settled  # exactly what was spent
        for lease_id, spent in broker.settled_by_lease.items():
            assert spent <= broker.granted[lease_id]

    with_a_long_request_on_a_retired_lease(check)


def test_own_free_parts_alone_admit_a_request_without_a_new_lease():
    async def check(broker, budgets, info, stream, first) -> None:
        leases = len(broker.granted)
        ticket = await budgets.reserve(info, 1000, 1000)  # the limits leave 500; lease 1 holds 1000 free
        assert ticket.lease is first and ticket.amount == 1000 and ticket.parts is None
        assert len(broker.granted) == leases
        budgets.release(ticket, 400)
        budgets.release(stream, 1000)
        await asyncio.sleep(0)
        assert broker.settled_by_lease[first.id] == 1400

    with_a_long_request_on_a_retired_lease(check)


def test_a_request_that_may_be_fitted_gets_its_whole_worst_case_from_merged_parts():
    async def check(broker, budgets, info, stream, first) -> None:
        ticket = await budgets.reserve(info, 1, 1200)  # could be fitted down to 1: the budget covers all of it
        assert ticket.amount == 1200
        budgets.release(ticket, 1200)
        budgets.release(stream, 1000)

    with_a_long_request_on_a_retired_lease(check)


def test_a_cost_below_the_first_part_leaves_the_later_parts_unspent():
    async def check(broker, budgets, info, stream, first) -> None:
        ticket = await budgets.reserve(info, 1200, 1200)
        new = ticket.parts[1][0]
        budgets.release(ticket, 700)
        assert (first.spent, new.spent, new.free) == (700, 0, 250)
        budgets.release(stream, 0)
        await asyncio.sleep(0)  # lease 1's settlement runs
        await budgets.sweep(everything=True)
        assert broker.settled_by_lease[first.id] == 700 and broker.settled_by_lease[new.id] == 0

    with_a_long_request_on_a_retired_lease(check)


def test_a_refusal_counts_every_own_leases_free_part_and_only_what_no_merge_covers_is_refused():
    async def check(broker, budgets, info, stream, first) -> None:
        with pytest.raises(BudgetRefusal) as refused:
            await budgets.reserve(info, 1501, 1501)  # one more than all that is left
        assert refused.value.available == 1500  # 500 the limits allow + lease 1's free 1000
        ticket = await budgets.reserve(info, 1500, 1500)  # exactly all that is left
        assert ticket.amount == 1500
        budgets.release(ticket, 1500)
        budgets.release(stream, 1000)
        await asyncio.sleep(0)  # lease 1's settlement runs
        await budgets.sweep(everything=True)
        assert broker.book.settled == 4000 and not broker.book.open

    with_a_long_request_on_a_retired_lease(check)


def test_a_forgotten_keys_retired_lease_admits_nothing_more():
    async def check(broker, budgets, info, stream, first) -> None:
        budgets.forget_key(info.key_id)
        with pytest.raises(BudgetRefusal) as refused:
            await budgets.reserve(info, 1000, 1000)  # lease 1's free part is no longer offered
        assert refused.value.available == 500
        budgets.release(stream, 1000)

    with_a_long_request_on_a_retired_lease(check)


def test_a_passing_failure_of_the_lease_for_what_the_own_parts_lack_still_ends_in_the_402_not_a_429():
    async def check(broker, budgets, info, stream, first) -> None:
        broker.passing_failures = 1  # the lease for the 200 lease 1 lacks: lost to another writer
        with pytest.raises(BudgetRefusal) as refused:
            await budgets.reserve(info, 1200, 1200)
        assert refused.value.status == 402 and refused.value.available == 1500
        budgets.release(stream, 1000)

    with_a_long_request_on_a_retired_lease(check)


def test_out_of_time_a_request_gets_the_limits_refusal_even_if_its_last_try_lost_a_race():
    """Two gateways share an account: a request first hears 'held by leases' (wait), then only loses races to the
    other gateway's writes. When its patience ends it is told what the budget allows (402), not 'busy' (429)."""

    class RacingBroker(LedgerBroker):
        def __init__(self):
            super().__init__(credits=1000)
            self.refused_once = False

        async def acquire(self, account_id, key_id, wanted, minimum):
            if not self.refused_once:
                self.refused_once = True
                raise BudgetExceeded("account_balance", "held by the other gateway", held_by_leases=True, available=0)
            raise LeaseUnavailable()  # the other gateway wrote first, every time

    budgets = Budgets(RacingBroker(), lease_multiple=2, patience=0.3)
    with pytest.raises(BudgetRefusal) as refused:
        asyncio.run(budgets.reserve(key(), 500, 500))
    assert refused.value.status == 402 and refused.value.code == "account_balance"
