"""Budget leases: how spend caps and balances hold with many gateway processes and no per-request I/O.

A gateway process asks for a lease: a slice of a key's spend cap and of its
account's credits, recorded on both aggregates, each checking its own limit
under optimistic concurrency (commands/leasing.py says why as two appends).
It then admits requests from that slice in memory and later settles the
lease with what it really spent, giving the rest back.
Because every open lease is counted against both limits until it is settled,

    key:     settled spend + open leases <= spend cap
    account: settled spend + open leases <= credits

hold whatever the number of gateways, and a request is only admitted when its
worst-case cost fits in its gateway's lease.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from domain.money import pico_to_usd


class BudgetExceeded(Exception):
    """A limit refuses the lease; `code` names it (key_spend_cap or account_balance)."""

    def __init__(self, code: str, message: str, held_by_leases: bool = False, available: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        # part of the limit is only reserved by open leases, which give back what they do not spend
        self.held_by_leases = held_by_leases
        self.available = available  # pico-USD both limits still allow (None: not a matter of money)


class LeaseBook(msgspec.Struct):
    """The open leases and settled spend one aggregate keeps (plain state, changed only by its events; a struct so
    the aggregate's snapshot can hold it)."""

    open: dict[UUID, int] = msgspec.field(default_factory=dict)
    expires: dict[UUID, datetime] = msgspec.field(default_factory=dict)
    settled: int = 0

    @property
    def reserved(self) -> int:
        return sum(self.open.values())

    def grant(self, lease_id: UUID, amount: int, expires_at: datetime) -> None:
        self.open[lease_id] = amount
        self.expires[lease_id] = expires_at

    def must_extend(self, lease_id: UUID, expires_at: datetime) -> bool:
        """Whether extending changes anything: only an open lease, and only to a later expiry."""
        return lease_id in self.open and expires_at > self.expires[lease_id]

    def extend(self, lease_id: UUID, expires_at: datetime) -> None:
        self.expires[lease_id] = expires_at

    def must_settle(self, lease_id: UUID, spent: int) -> bool:
        """Whether settling changes anything: a lease that is not open (already settled) is left alone."""
        if spent < 0:
            raise ValueError("spent must not be negative")
        return lease_id in self.open

    def settle(self, lease_id: UUID, spent: int) -> None:
        self.open.pop(lease_id, None)
        self.expires.pop(lease_id, None)
        self.settled += spent


class LeaseGrant(msgspec.Struct, frozen=True):
    """A lease as its holder sees it: what the budget commands grant and the gateway admits requests from."""

    lease_id: UUID
    amount: int  # pico-USD
    expires_at: datetime


# The lease events. Account and ApiKey each declare their own three (their registered names differ, and the
# account's BudgetLeased also names the key) on these bases, which hold what each event does to the holder's
# LeaseBook. The bases are not dataclasses: each event's fields, in their stored order, stay on its own class.


class GrantsLease:
    lease_id: UUID
    amount: int
    expires_at: datetime

    def apply(self, aggregate: Any) -> None:
        aggregate.leases.grant(self.lease_id, self.amount, self.expires_at)


class SettlesLease:
    lease_id: UUID
    spent: int

    def apply(self, aggregate: Any) -> None:
        aggregate.leases.settle(self.lease_id, self.spent)


class ExtendsLease:
    lease_id: UUID
    expires_at: datetime

    def apply(self, aggregate: Any) -> None:
        aggregate.leases.extend(self.lease_id, self.expires_at)


class LeaseHolder:
    """The budget leases of an aggregate (Account, ApiKey), written once: each public method checks the rules,
    then triggers the holder's own event, whose `apply` (above) changes the book.

    The holder sets `leases`, says what a new lease may still take (`leasable`), and declares its BudgetLeased,
    LeaseSettled and LeaseExtended events on GrantsLease, SettlesLease and ExtendsLease."""

    BudgetLeased: ClassVar[type[GrantsLease]]
    LeaseSettled: ClassVar[type[SettlesLease]]
    LeaseExtended: ClassVar[type[ExtendsLease]]
    leases: LeaseBook

    @property
    def spent_and_reserved(self) -> int:
        return self.leases.settled + self.leases.reserved

    @property
    def leasable(self) -> int | None:
        """What a new lease may still take: the limit less what is spent and reserved (None: no limit)."""
        raise NotImplementedError

    def _grant_lease(self, code: str, lease_id: UUID, amount: int, expires_at: datetime, **fields: Any) -> None:
        """Lease `amount` if the limit (refused as `code`) allows it; `fields`: what else the holder's event names."""
        leasable = self.leasable
        if amount <= 0 or (leasable is not None and amount > leasable):
            raise BudgetExceeded(code, f"cannot reserve {amount} of {leasable} available")
        self._trigger(self.BudgetLeased, lease_id=lease_id, amount=amount, expires_at=expires_at, **fields)

    def settle_lease(self, lease_id: UUID, spent: int) -> None:
        """Idempotent: settling a lease that is not open changes nothing."""
        if self.leases.must_settle(lease_id, spent):
            self._trigger(self.LeaseSettled, lease_id=lease_id, spent=spent)

    def extend_lease(self, lease_id: UUID, expires_at: datetime) -> None:
        """A later expiry for an open lease; a settled one (or an earlier expiry) changes nothing."""
        if self.leases.must_extend(lease_id, expires_at):
            self._trigger(self.LeaseExtended, lease_id=lease_id, expires_at=expires_at)

    def _trigger(self, event_class: type[Any], **fields: Any) -> None:
        cast(Aggregate, self).trigger_event(event_class, **fields)


def lease_amount(
    wanted: int,
    minimum: int,
    key_leasable: int | None,
    account_leasable: int,
    key_cap: int | None,
    key_spend: int,
    credits: int,
    account_spend: int,
    key_reserved: int = 0,
    account_reserved: int = 0,
) -> int:
    """How much to lease: up to `wanted`, at most half of what both limits leave, and at least `minimum`."""
    leasable = min([account_leasable] + ([key_leasable] if key_leasable is not None else []))
    if key_leasable is not None and key_leasable < minimum:
        raise BudgetExceeded(
            "key_spend_cap",
            f"this API key's spend cap of {pico_to_usd(key_cap or 0)} USD "
            f"{'does not cover this request' if key_leasable > 0 else 'is reached'}: "
            f"{_spent(key_spend, key_reserved)}",
            held_by_leases=key_reserved > 0,
            available=max(0, leasable),
        )
    if account_leasable < minimum:
        raise BudgetExceeded(
            "account_balance",
            f"the account balance {'does not cover this request' if account_leasable > 0 else 'is used up'}: "
            f"credits {pico_to_usd(credits)} USD, {_spent(account_spend, account_reserved)}; top up to continue",
            held_by_leases=account_reserved > 0,
            available=max(0, leasable),
        )
    # Never more than half of what is left (unless that is below the minimum): with several gateways
    # each asking, leases shrink as the budget runs out, so what one holds unused stays small.
    return min(wanted, max(minimum, leasable // 2))


def _spent(spent_and_reserved: int, reserved: int) -> str:
    spent = f"{pico_to_usd(spent_and_reserved - reserved)} USD spent"
    if not reserved:
        return spent
    return (
        f"{spent} and {pico_to_usd(reserved)} USD reserved for requests in flight (what they do not spend "
        f"comes back when they finish)"
    )


def period_start(period: str | None, now: datetime) -> datetime | None:
    """The start (UTC) of the cap period `now` falls in; None for a cap that never resets."""
    if period is None:
        return None
    now = now.astimezone(timezone.utc)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "daily":
        return day
    if period == "weekly":
        return day.fromordinal(day.toordinal() - day.weekday()).replace(tzinfo=timezone.utc)
    if period == "monthly":
        return day.replace(day=1)
    raise ValueError(f"unknown cap period {period!r}")
