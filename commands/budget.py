"""Budget lease use cases: reserve a slice of a key's cap and its account's credits, and settle it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from commands.app import MeshApplication, NotFound
from domain.account import Account
from domain.apikey import ApiKey
from domain.budget import lease_amount


class Lease(msgspec.Struct, frozen=True):
    lease_id: UUID
    amount: int  # pico-USD
    expires_at: datetime
    position: int


class BudgetCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def lease(self, account_id: UUID, key_id: UUID, wanted: int, minimum: int, ttl: timedelta) -> Lease:
        """Reserve between `minimum` and `wanted` on both the key and the account, atomically."""

        def use_case() -> Lease:
            key, account = self._load(account_id, key_id)
            now = datetime.now(timezone.utc)
            key.start_period_if_due(now)
            amount = lease_amount(
                wanted,
                minimum,
                key.available,
                account.available,
                key.spend_cap,
                key.spent_and_reserved,
                account.credits,
                account.spent_and_reserved,
                key.leases.reserved,
                account.leases.reserved,
            )
            lease_id, expires_at = uuid.uuid4(), now + ttl
            key.lease(lease_id, amount, expires_at, now)
            account.lease(lease_id, amount, key_id, expires_at)
            return Lease(lease_id, amount, expires_at, self.app.save_all(key, account))

        return self.app.retrying(use_case)

    def settle(self, account_id: UUID, key_id: UUID, lease_id: UUID, spent: int) -> int:
        """Record what a lease really paid for; the rest returns. Settling twice changes nothing."""

        def use_case() -> int:
            key, account = self._load(account_id, key_id)
            key.settle_lease(lease_id, spent)
            account.settle_lease(lease_id, spent)
            changed = [a for a in (key, account) if a.pending_events]
            return self.app.save_all(*changed) if changed else 0

        return self.app.retrying(use_case)

    def extend(self, account_id: UUID, key_id: UUID, lease_id: UUID, ttl: timedelta) -> datetime | None:
        """Push an open lease's expiry to `ttl` from now, on both aggregates at once (its holder still has requests
        running on it). None: the lease is no longer open (settled), nothing changes."""

        def use_case() -> datetime | None:
            key, account = self._load(account_id, key_id)
            if lease_id not in key.leases.open or lease_id not in account.leases.open:
                return None
            expires_at = datetime.now(timezone.utc) + ttl
            key.extend_lease(lease_id, expires_at)
            account.extend_lease(lease_id, expires_at)
            changed = [a for a in (key, account) if a.pending_events]
            if changed:
                self.app.save_all(*changed)
            return min(key.leases.expires[lease_id], account.leases.expires[lease_id])

        return self.app.retrying(use_case)

    def _load(self, account_id: UUID, key_id: UUID) -> tuple[ApiKey, Account]:
        try:
            key = self.app.repository.get(key_id)
            account = self.app.repository.get(account_id)
        except AggregateNotFoundError:
            raise NotFound(f"no API key {key_id} in account {account_id}") from None
        if not isinstance(key, ApiKey) or not isinstance(account, Account) or key.account_id != account.id:
            raise NotFound(f"no API key {key_id} in account {account_id}")
        return key, account
