"""Budget lease use cases: reserve a slice of a key's cap and its account's credits, and settle it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from functools import partial
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from commands.app import Conflict, MeshApplication, NotFound
from domain.account import Account
from domain.apikey import ApiKey
from domain.leases import BudgetExceeded, LeaseGrant, lease_amount


LEASE_ATTEMPTS = 12  # fresh lease ids tried when the key keeps refusing what the account already granted


class BudgetCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def lease(self, account_id: UUID, key_id: UUID, wanted: int, minimum: int, ttl: timedelta) -> LeaseGrant:
        """Reserve between `minimum` and `wanted` on both the key and the account.

        Two appends, the account's first, not one atomic batch: each aggregate checks its own limit under
        optimistic concurrency, so both limits hold whatever happens between the appends, and a plain append
        costs JetStream no synced staging files (an atomic batch writes and deletes some on disk while the
        stream waits). The account's comes first because the lease reaper finds leases by it: a process that
        stops between the two leaves a reservation on the account alone, which expires and is reaped like any
        lease of a vanished process. A key that changed in between so that it refuses the lease gets the
        account's part settled at 0, and the lease is asked for afresh (with a new id).
        """
        for _ in range(LEASE_ATTEMPTS):
            lease = self.app.retrying(partial(self._lease, account_id, key_id, uuid.uuid4(), wanted, minimum, ttl))
            if lease is not None:
                return lease
        raise Conflict("the API key was changed concurrently too often; try again")

    def _lease(
        self, account_id: UUID, key_id: UUID, lease_id: UUID, wanted: int, minimum: int, ttl: timedelta
    ) -> LeaseGrant | None:
        """One try of `lease`; None when the account's part had to be given back (ask again with a new id)."""
        key, account = self._load(account_id, key_id)
        now = datetime.now(timezone.utc)
        if lease_id in key.leases.open:  # an earlier try stored both parts
            return LeaseGrant(lease_id, key.leases.open[lease_id], key.leases.expires[lease_id])
        key.start_period_if_due(now)
        if lease_id in account.leases.open:  # an earlier try stored the account's part, then lost the key's race
            amount, expires_at = account.leases.open[lease_id], account.leases.expires[lease_id]
            try:
                key.lease(lease_id, amount, expires_at, now)
            except BudgetExceeded:
                account.settle_lease(lease_id, 0)
                self.app.save(account)
                return None
        else:
            amount = lease_amount(
                wanted,
                minimum,
                key.leasable,
                account.leasable,
                key.spend_cap,
                key.spent_and_reserved,
                account.credits,
                account.spent_and_reserved,
                key.leases.reserved,
                account.leases.reserved,
            )
            expires_at = now + ttl
            key.lease(lease_id, amount, expires_at, now)  # checked before anything is stored
            account.lease(lease_id, amount, key_id, expires_at)
            self.app.save(account)
        self.app.save(key)
        return LeaseGrant(lease_id, amount, expires_at)

    def settle(self, account_id: UUID, key_id: UUID, lease_id: UUID, spent: int) -> int:
        """Record what a lease really paid for; the rest returns. Settling twice changes nothing.

        The key's settlement is appended first and the account's second (see `lease`): a process that stops
        between the two leaves the lease open on the account, where the reaper settles it after expiry."""

        def use_case() -> int:
            key, account = self._load(account_id, key_id)
            key.settle_lease(lease_id, spent)
            account.settle_lease(lease_id, spent)
            return self._save_each(key, account)

        return self.app.retrying(use_case)

    def extend(self, account_id: UUID, key_id: UUID, lease_id: UUID, ttl: timedelta) -> datetime | None:
        """Push an open lease's expiry to `ttl` from now, on the account and on the key (its holder still has
        requests running on it). None: the lease is no longer open (settled), nothing changes."""

        def use_case() -> datetime | None:
            key, account = self._load(account_id, key_id)
            if lease_id not in key.leases.open or lease_id not in account.leases.open:
                return None
            expires_at = datetime.now(timezone.utc) + ttl
            key.extend_lease(lease_id, expires_at)
            account.extend_lease(lease_id, expires_at)
            self._save_each(account, key)
            return min(key.leases.expires[lease_id], account.leases.expires[lease_id])

        return self.app.retrying(use_case)

    def _save_each(self, *aggregates: ApiKey | Account) -> int:
        """Append each aggregate's new events on its own, in order; the stream position of the last (0: none).
        A try that loses a race after the first append runs again and finds that part already done."""
        position = 0
        for aggregate in aggregates:
            if aggregate.pending_events:
                position = self.app.save_all(aggregate)
        return position

    def _load(self, account_id: UUID, key_id: UUID) -> tuple[ApiKey, Account]:
        try:
            key = self.app.repository.get(key_id)
            account = self.app.repository.get(account_id)
        except AggregateNotFoundError:
            raise NotFound(f"no API key {key_id} in account {account_id}") from None
        if not isinstance(key, ApiKey) or not isinstance(account, Account) or key.account_id != account.id:
            raise NotFound(f"no API key {key_id} in account {account_id}")
        return key, account
