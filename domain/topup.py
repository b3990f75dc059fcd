"""Top-ups: money coming in from a payment provider, credited exactly once.

A top-up's id derives from the provider and its own reference (a Stripe
PaymentIntent id, a bank-transfer reference), so however often and however
late a provider reports the same payment, it lands on the same aggregate, and
the aggregate credits it once. Refunds and disputes take money back; one that
arrives before the payment itself (webhooks come in any order) is held and
taken back when the payment arrives, once.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.account import check_reason
from domain.bounds import MAX_REFERENCE_LENGTH, check_aware, check_text
from domain.money import check_amount


class TopUpError(ValueError):
    pass


class TopUp(Aggregate):
    class Requested(Aggregate.Created):
        account_id: UUID
        provider: str  # stripe | bank_transfer
        reference: str  # the provider's id for this payment
        amount: int  # pico-USD asked for
        expires_at: datetime | None = None

    class Succeeded(Aggregate.Event):
        amount: int  # pico-USD received and credited
        operator: str | None = None  # the operator who confirmed it (an account id, or "token"); None: a provider

    class Rejected(Aggregate.Event):
        """An operator says the money will not come (a bank transfer never sent, or sent back): it can no longer
        be confirmed."""

        reason: str
        operator: str

    class Failed(Aggregate.Event):
        reason: str

    class Expired(Aggregate.Event):
        pass

    class Refunded(Aggregate.Event):
        amount: int  # pico-USD taken back by this refund
        total_refunded: int

    class Disputed(Aggregate.Event):
        dispute_id: str
        amount: int

    class RefundHeld(Aggregate.Event):
        """A refund reported before the payment arrived: taken back when it does."""

        total_refunded: int

    class DisputeHeld(Aggregate.Event):
        """A dispute reported before the payment arrived: taken back when it does."""

        dispute_id: str
        amount: int

    @staticmethod
    def create_id(provider: str, reference: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"mesh:topup:{provider}:{reference}")

    @event(Requested)
    def __init__(
        self, account_id: UUID, provider: str, reference: str, amount: int, expires_at: datetime | None = None
    ):
        check_amount(amount, "amount_usd", TopUpError, positive=True)
        check_text(provider, "provider", MAX_REFERENCE_LENGTH, error=TopUpError)
        check_text(reference, "reference", MAX_REFERENCE_LENGTH, error=TopUpError)
        check_aware(expires_at, "expires_at", TopUpError)
        self.account_id = account_id
        self.provider = provider
        self.reference = reference
        self.amount = amount
        self.expires_at = expires_at
        self.status = "pending"
        self.received = 0
        self.refunded = 0
        self.disputes: set[str] = set()
        self.failures = 0
        self.held_refund = 0  # the largest total refunded reported before the payment arrived
        self.held_disputes: dict[str, int] = {}  # dispute id -> amount, reported before the payment arrived

    def succeed(self, amount: int, now: datetime, operator: str | None = None) -> bool:
        """Record the payment; True if this call credited it (False: it already was)."""
        if self.status == "succeeded":
            return False
        if self.status == "rejected":
            raise TopUpError(f"top-up {self.reference} was rejected; it can no longer be confirmed")
        if self.status == "expired" or (self.expires_at is not None and now >= self.expires_at):
            raise TopUpError(f"top-up {self.reference} expired at {self.expires_at}; it can no longer be confirmed")
        check_amount(amount, "amount_usd", TopUpError, positive=True)
        self._succeed(amount, operator)
        return True

    @event(Succeeded)
    def _succeed(self, amount: int, operator: str | None = None) -> None:
        self.status = "succeeded"
        self.received = amount

    def reject(self, reason: str, operator: str) -> None:
        """Only a pending top-up can be rejected; rejecting a rejected one again changes nothing."""
        if self.status == "rejected":
            return
        if self.status != "pending":
            raise TopUpError(f"top-up {self.reference} is {self.status}; only a pending one can be rejected")
        self._reject(check_reason(reason), operator)

    @event(Rejected)
    def _reject(self, reason: str, operator: str) -> None:
        self.status = "rejected"

    def fail(self, reason: str) -> None:
        if self.status == "pending":
            self._fail(reason[:500])

    @event(Failed)
    def _fail(self, reason: str) -> None:
        self.failures += 1

    def expire(self, now: datetime) -> None:
        if self.status == "pending" and self.expires_at is not None and now >= self.expires_at:
            self._expire()

    @event(Expired)
    def _expire(self) -> None:
        self.status = "expired"

    def apply_held(self) -> int:
        """After the payment arrived: the refund and disputes held until then, taken back now; returns the total."""
        taken = self.refund_to(self.held_refund) if self.held_refund else 0
        for dispute_id, amount in sorted(self.held_disputes.items()):
            taken += self.dispute(dispute_id, amount)
        return taken

    def refund_to(self, total_refunded: int) -> int:
        """The provider says `total_refunded` has been refunded in all; returns what this adds (0: nothing new).
        Before the payment arrived it is held (and 0 returned)."""
        if self.status == "pending" and total_refunded > self.held_refund:
            self._hold_refund(total_refunded)
            return 0
        total_refunded = min(total_refunded, self.received)
        if self.status != "succeeded" or total_refunded <= self.refunded:
            return 0
        amount = total_refunded - self.refunded
        self._refund(amount, total_refunded)
        return amount

    @event(Refunded)
    def _refund(self, amount: int, total_refunded: int) -> None:
        self.refunded = total_refunded

    @event(RefundHeld)
    def _hold_refund(self, total_refunded: int) -> None:
        self.held_refund = total_refunded

    def dispute(self, dispute_id: str, amount: int) -> int:
        """A chargeback: returns what it takes back (0 if this dispute was already recorded). Before the payment
        arrived it is held (and 0 returned)."""
        if self.status == "pending" and dispute_id not in self.held_disputes:
            self._hold_dispute(dispute_id, amount)
            return 0
        if self.status != "succeeded" or dispute_id in self.disputes:
            return 0
        amount = min(amount, self.received - self.refunded)
        self._dispute(dispute_id, amount)
        return amount

    @event(Disputed)
    def _dispute(self, dispute_id: str, amount: int) -> None:
        self.disputes.add(dispute_id)

    @event(DisputeHeld)
    def _hold_dispute(self, dispute_id: str, amount: int) -> None:
        self.held_disputes[dispute_id] = amount
