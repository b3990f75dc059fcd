"""A lease with requests still running is renewed before it expires (gateway/lease_admission.py, domain LeaseBook),
so no reaper settles it without what those requests cost; a lease that was settled anyway admits nothing more."""

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

from domain.account import Account
from domain.apikey import ApiKey
from gateway import lease_admission as budget_module
from gateway.admission import KeyInfo
from domain.leases import LeaseGrant
from gateway.lease_admission import Budgets

NOW = datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc)


def test_only_an_open_lease_gets_a_later_expiry():
    account = Account(email="a@example.com", password_hash="h", token_hash="t")
    account.grant_credits(1000, "seed", "test")
    key = ApiKey(account_id=account.id, label="k", key_hash="h", prefix="mk-", spend_cap=None, default_model=None)
    lease = uuid.uuid4()
    key.lease(lease, 100, NOW + timedelta(minutes=15), NOW)
    account.lease(lease, 100, key.id, NOW + timedelta(minutes=15))
    account.collect_events()
    account.extend_lease(lease, NOW + timedelta(minutes=30))
    account.extend_lease(lease, NOW + timedelta(minutes=20))  # earlier than now set: nothing
    assert [type(e).__name__ for e in account.collect_events()] == ["LeaseExtended"]
    assert account.leases.expires[lease] == NOW + timedelta(minutes=30) and account.leasable == 900
    key.settle_lease(lease, 40)
    key.collect_events()
    key.extend_lease(lease, NOW + timedelta(hours=1))  # settled: nothing
    assert key.collect_events() == [] and lease not in key.leases.expires


class RenewingBroker:
    def __init__(self, life: timedelta, open_: bool = True):
        self.life, self.open = life, open_
        self.extended: list[uuid.UUID] = []

    async def acquire(self, account_id, key_id, wanted, minimum):
        return LeaseGrant(uuid.uuid4(), wanted, datetime.now(timezone.utc) + self.life)

    async def settle(self, account_id, key_id, lease_id, spent):
        pass

    async def extend(self, account_id, key_id, lease_id):
        self.extended.append(lease_id)
        return datetime.now(timezone.utc) + self.life if self.open else None


def key() -> KeyInfo:
    return KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None)


def at(monkeypatch, seconds_later: float) -> None:
    clock = budget_module.time.monotonic() + seconds_later
    monkeypatch.setattr(budget_module.time, "monotonic", lambda: clock)


def test_a_lease_with_a_request_running_is_renewed_when_half_its_life_is_left(monkeypatch):
    broker = RenewingBroker(timedelta(seconds=90))
    budgets = Budgets(broker)

    async def run() -> None:
        ticket = await budgets.reserve(key(), 10, 10)
        at(monkeypatch, 44)
        await budgets.sweep()
        assert broker.extended == []  # more than half its life left
        monkeypatch.undo()
        at(monkeypatch, 46)  # 44 s left of 90
        await budgets.sweep()
        assert broker.extended == [ticket.lease.id]
        assert ticket.lease.deadline > budget_module.time.monotonic() + 80  # a full life from now
        budgets.release(ticket, 7)

    asyncio.run(run())


def test_a_lease_without_requests_is_not_renewed(monkeypatch):
    broker = RenewingBroker(timedelta(seconds=90))
    budgets = Budgets(broker)

    async def run() -> None:
        ticket = await budgets.reserve(key(), 10, 10)
        budgets.release(ticket, 3)
        at(monkeypatch, 61)
        await budgets.sweep()
        assert broker.extended == []

    asyncio.run(run())


def test_a_lease_settled_under_its_requests_admits_nothing_more(monkeypatch):
    broker = RenewingBroker(timedelta(seconds=90), open_=False)
    budgets = Budgets(broker)
    info = key()

    async def run() -> None:
        ticket = await budgets.reserve(info, 10, 10)
        at(monkeypatch, 61)
        await budgets.sweep()
        await budgets.sweep()
        assert broker.extended == [ticket.lease.id]  # asked once, then it is retired
        other = await budgets.reserve(info, 10, 10)
        assert other.lease is not ticket.lease
        budgets.release(ticket, 7)
        budgets.release(other, 1)

    asyncio.run(run())
