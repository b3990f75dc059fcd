"""Budget leases on a real nats-server: a lease, its renewal and its settlement are plain appends on the account
and on the key (no atomic batch), in the order that leaves a stopped process's half reapable; a key that another
writer changes between the two appends gets no lease it would refuse, and the account's part comes back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import nats
import pytest

from commands.app import MeshApplication
from commands.leasing import BudgetCommands
from commands.keys import KeyChanges, KeyCommands
from domain.account import Account
from domain.apikey import ApiKey
from domain.leases import BudgetExceeded
from domain.events import HEADER_ORIGINATOR_ID, HEADER_TOPIC
from tests.unit.test_command_contract import CREDITS, funded  # noqa: F401  (funded: a fixture; its `app` is this tier's, on NATS)

TTL = timedelta(seconds=60)


def appended_since(nats_url: str, stream: str, after: int) -> list[tuple[str, str, bool]]:
    """(topic, originator id, part of an atomic batch) of each message after stream position `after`."""

    async def read() -> list[tuple[str, str, bool]]:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(stream)).state.last_seq
            found = []
            for seq in range(after + 1, last + 1):
                headers = (await js.get_msg(stream, seq)).headers or {}
                found.append((headers[HEADER_TOPIC], headers[HEADER_ORIGINATOR_ID], "Nats-Batch-Id" in headers))
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


def stream_end(app: MeshApplication) -> int:
    return app.recorder.max_notification_id() or 0


def test_lease_renewal_and_settlement_are_plain_appends_account_first_then_key_first(
    app, funded, nats_url, stream_name
):
    account_id, key_id = funded
    budget = BudgetCommands(app)
    start = stream_end(app)
    lease = budget.lease(account_id, key_id, 10**9, 1, TTL)
    assert budget.extend(account_id, key_id, lease.lease_id, TTL * 2) is not None
    budget.settle(account_id, key_id, lease.lease_id, 123)
    account, key = str(account_id), str(key_id)
    assert appended_since(nats_url, stream_name, start) == [
        ("account.budget_leased", account, False),  # the reaper finds a lease by its account's part
        ("key.budget_leased", key, False),
        ("account.lease_extended", account, False),
        ("key.lease_extended", key, False),
        ("key.lease_settled", key, False),
        ("account.lease_settled", account, False),  # so an unsettled lease is always still open on the account
    ]
    assert app.repository.get(account_id).leases.settled == app.repository.get(key_id).leases.settled == 123


class _ChangeKeyAfterAccountPart:
    """Another writer (a second application on the same stream) changes the key right after the lease's first
    append on the account, once: the key's append then loses the race and the use case runs again."""

    def __init__(self, app: MeshApplication, other: MeshApplication, account_id, key_id, changes: KeyChanges):
        self.save, self.done = app.save, False
        self.change = lambda: KeyCommands(other).update(account_id, key_id, changes)
        app.save = self  # type: ignore[method-assign]

    def __call__(self, *aggregates, **kwargs):
        recordings = self.save(*aggregates, **kwargs)
        if not self.done and any(isinstance(a, Account) and a.leases.open for a in aggregates):
            self.done = True
            self.change()
        return recordings


def test_a_key_changed_between_the_appends_still_gets_the_lease_the_account_holds(app, funded, nats_url, stream_name):
    account_id, key_id = funded
    other = MeshApplication(nats_url, stream_name)
    try:
        _ChangeKeyAfterAccountPart(app, other, account_id, key_id, KeyChanges(label="renamed"))
        lease = BudgetCommands(app).lease(account_id, key_id, 10**9, 1, TTL)
    finally:
        other.close()
    account: Account = app.repository.get(account_id)
    key: ApiKey = app.repository.get(key_id)
    assert key.label == "renamed"
    assert account.leases.open == key.leases.open == {lease.lease_id: lease.amount}  # one lease, on both


def test_a_key_whose_cap_dropped_between_the_appends_gets_no_lease_it_refuses(app, funded, nats_url, stream_name):
    account_id, key_id = funded
    other = MeshApplication(nats_url, stream_name)
    try:
        _ChangeKeyAfterAccountPart(app, other, account_id, key_id, KeyChanges(spend_cap=1_000))
        lease = BudgetCommands(app).lease(account_id, key_id, 10**9, 1, TTL)
    finally:
        other.close()
    account: Account = app.repository.get(account_id)
    key: ApiKey = app.repository.get(key_id)
    # the first try's part on the account (sized for the old cap) was given back at 0, and a new lease sized for
    # the new cap (half of it) was taken with a new id
    assert lease.amount == 500
    assert account.leases.open == key.leases.open == {lease.lease_id: 500}
    assert account.leases.settled == 0 and account.leasable == CREDITS - 500
    with pytest.raises(BudgetExceeded) as refused:
        BudgetCommands(app).lease(account_id, key_id, 10**9, 600, TTL)
    assert refused.value.code == "key_spend_cap"
    assert app.repository.get(account_id).leases.open == {lease.lease_id: 500}  # a refusal stores nothing
