"""What billing does with each event it reads: the handler of each, on the batch being applied
(projections/billing_projection.py runs the batch and adds up its credits and usage at the end)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any, Awaitable, Callable
from uuid import UUID

import msgspec
import psycopg

from domain.account import AUTO_REFILL_EVENTS, Account
from domain.autorefill import RefillChange
from domain.topup import TopUp
from domain.usage import RequestsRefused, UsageRecorded
from projections.readmodel import Envelope


class BillingBatch:
    """What one batch of events changes: statements run as their events come, sums and usage rows once at its end."""

    __slots__ = ("cur", "t", "credits", "usage", "streamed")

    def __init__(self, cur: psycopg.AsyncCursor, t: dict[str, str]):
        self.cur, self.t = cur, t
        self.credits: dict[UUID, int] = defaultdict(int)
        self.usage: list[UsageRecorded] = []
        self.streamed: list[datetime] = []  # when each usage event reached the stream

    async def registered(self, item: Envelope) -> None:
        self.credits[item.event.originator_id] += 0

    async def credits_granted(self, item: Envelope) -> None:
        e = item.event
        self.credits[e.originator_id] += e.amount
        await self._grant(item, e.amount, e.granted_by)

    async def credits_debited(self, item: Envelope) -> None:  # a grant of the negative amount
        e = item.event
        self.credits[e.originator_id] -= e.amount
        await self._grant(item, -e.amount, e.debited_by)

    async def _grant(self, item: Envelope, amount: int, by: str) -> None:
        e = item.event
        await self.cur.execute(
            f"insert into {self.t['credit_grants']} (position, account_id, amount, reason, granted_by, time)"
            " values (%s, %s, %s, %s, %s, %s)",
            (item.position, e.originator_id, amount, e.reason, by, e.timestamp),
        )

    async def topup_requested(self, item: Envelope) -> None:
        e = item.event
        await self.cur.execute(
            f"""insert into {self.t["topups"]} (topup_id, account_id, provider, reference, amount, status,
                expires_at, created_at, updated_at) values (%s, %s, %s, %s, %s, 'pending', %s, %s, %s)""",
            (e.originator_id, e.account_id, e.provider, e.reference, e.amount, e.expires_at, e.timestamp, e.timestamp),
        )

    async def topup_changed(self, item: Envelope) -> None:
        e = item.event
        change, values = _TOPUP_CHANGES[type(e)]
        await self.cur.execute(
            f"update {self.t['topups']} set {change}, updated_at = %s where topup_id = %s",
            (*values(e), e.timestamp, e.originator_id),
        )

    async def stripe_customer(self, item: Envelope) -> None:
        await self._auto_refill_row(item, {"customer": item.event.customer_id})

    async def auto_refill(self, item: Envelope) -> None:
        change = item.event.refill_change()
        await self._auto_refill_row(item, _refill_columns(change), change.failures_added)

    async def _auto_refill_row(self, item: Envelope, columns: dict[str, Any], failures_added: int = 0) -> None:
        e = item.event
        increment = f", failures = a.failures + {failures_added:d}" if failures_added else ""
        names = list(columns)
        await self.cur.execute(
            f"""insert into {self.t["auto_refills"]} as a (account_id, {", ".join(names)}, updated_at)
                values (%s, {", ".join(["%s"] * len(names))}, %s)
                on conflict (account_id) do update set
                {", ".join(f"{n} = excluded.{n}" for n in names)}{increment}, updated_at = excluded.updated_at""",
            (e.originator_id, *columns.values(), e.timestamp),
        )

    async def budget_leased(self, item: Envelope) -> None:
        e = item.event
        await self.cur.execute(
            f"insert into {self.t['leases']} (lease_id, account_id, key_id, amount, expires_at)"
            " values (%s, %s, %s, %s, %s) on conflict do nothing",
            (e.lease_id, e.originator_id, e.key_id, e.amount, e.expires_at),
        )

    async def lease_settled(self, item: Envelope) -> None:
        await self.cur.execute(
            f"update {self.t['leases']} set settled = true where lease_id = %s", (item.event.lease_id,)
        )

    async def lease_extended(self, item: Envelope) -> None:
        e = item.event
        await self.cur.execute(
            f"update {self.t['leases']} set expires_at = %s where lease_id = %s", (e.expires_at, e.lease_id)
        )

    async def usage_recorded(self, item: Envelope) -> None:
        self.usage.append(item.event)
        self.streamed.append(item.time)

    async def refused(self, item: Envelope) -> None:
        e = item.event
        await self.cur.executemany(
            f"insert into {self.t['key_refusals']} (refusal_id, code, account_id, key_id, until, count)"
            " values (%s, %s, %s, %s, %s, %s) on conflict do nothing",
            [(e.refusal_id, code, e.account_id, e.key_id, e.until, n) for code, n in e.counts.items()],
        )


# What each top-up event after the request changes of its row: the assignments and their values.
_TOPUP_CHANGES: dict[type, tuple[str, Callable[[Any], tuple]]] = {
    TopUp.Succeeded: ("status = 'succeeded', received = %s", lambda e: (e.amount,)),
    TopUp.Failed: ("failures = failures + 1, last_failure = %s", lambda e: (e.reason,)),
    TopUp.Expired: ("status = 'expired'", lambda e: ()),
    TopUp.Rejected: ("status = 'rejected', last_failure = %s", lambda e: (e.reason,)),
    TopUp.Refunded: ("refunded = %s", lambda e: (e.total_refunded,)),
    TopUp.Disputed: ("disputed = disputed + %s", lambda e: (e.amount,)),
    # held until the payment arrives; the money moves with the refund or dispute event then
    TopUp.RefundHeld: ("status = status", lambda e: ()),
    TopUp.DisputeHeld: ("status = status", lambda e: ()),
}


def _refill_columns(change: RefillChange) -> dict[str, Any]:
    """The auto-refill row's columns an auto-refill event's change (domain/autorefill.py) sets, and their values."""
    columns: dict[str, Any] = {}
    if change.settings is not msgspec.UNSET:
        columns.update(msgspec.structs.asdict(change.settings))
    if change.payment_method is not msgspec.UNSET:
        columns["payment_method"] = change.payment_method
    if change.card is not msgspec.UNSET:
        card = change.card
        columns.update(
            card_brand=card.brand, card_last4=card.last4, card_exp_month=card.exp_month, card_exp_year=card.exp_year
        )
    columns.update(change.assigned())
    return columns


# The one table of what billing does with each event it reads.
HANDLERS: dict[type, Callable[[BillingBatch, Envelope], Awaitable[None]]] = {
    Account.Registered: BillingBatch.registered,
    Account.CreditsGranted: BillingBatch.credits_granted,
    Account.CreditsDebited: BillingBatch.credits_debited,
    TopUp.Requested: BillingBatch.topup_requested,
    **dict.fromkeys(_TOPUP_CHANGES, BillingBatch.topup_changed),
    Account.StripeCustomerLinked: BillingBatch.stripe_customer,
    **dict.fromkeys(AUTO_REFILL_EVENTS, BillingBatch.auto_refill),
    Account.BudgetLeased: BillingBatch.budget_leased,
    Account.LeaseSettled: BillingBatch.lease_settled,
    Account.LeaseExtended: BillingBatch.lease_extended,
    UsageRecorded: BillingBatch.usage_recorded,
    RequestsRefused: BillingBatch.refused,
}
