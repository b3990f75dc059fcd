"""Top-up use cases: a payment is requested, then confirmed (credited once), failed, expired,
refunded or disputed. Crediting saves the top-up and the account together, atomically."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from commands.app import MeshApplication, NotFound
from domain.account import Account
from domain.topup import TopUp


class TopUpResult(msgspec.Struct, frozen=True):
    topup: TopUp
    position: int
    credited: int = 0  # pico-USD this call credited (negative: debited)


def take_back_held(topup: TopUp, account: Account, by: str) -> int:
    """The payment just arrived: debit the refund and disputes reported before it (in the same save)."""
    taken = topup.apply_held()
    if taken > 0:
        account.debit_credits(taken, f"refund or dispute of top-up {topup.reference}, reported before its payment", by)
    return taken


class TopUpCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def link_stripe_customer(self, account_id: UUID, customer_id: str) -> int:
        def use_case() -> int:
            account = self.app.account(account_id)
            account.link_stripe_customer(customer_id)
            return self.app.save_all(account) if account.pending_events else 0

        return self.app.retrying(use_case)

    def stripe_customer(self, account_id: UUID) -> str | None:
        return self.app.account(account_id).stripe_customer

    def request(
        self, account_id: UUID, provider: str, reference: str, amount: int, expires_at: datetime | None = None
    ) -> TopUpResult:
        """Record a payment the account started. Recording the same one again changes nothing."""
        self.app.account(account_id)
        topup = TopUp(
            account_id=account_id, provider=provider, reference=reference, amount=amount, expires_at=expires_at
        )
        try:
            return TopUpResult(topup, self.app.save_all(topup))
        except RecordConflictError:
            return TopUpResult(self.load(provider, reference), 0)

    def confirm(
        self,
        provider: str,
        reference: str,
        amount: int,
        by: str,
        account_id: UUID | None = None,
        operator: str | None = None,
    ) -> TopUpResult:
        """The payment arrived: credit it, once. An unknown payment is recorded first when the
        provider names the account (e.g. an off-session charge whose request was not saved)."""

        def use_case() -> TopUpResult:
            try:
                topup = self.load(provider, reference)
            except NotFound:
                if account_id is None:
                    raise
                topup = TopUp(account_id=account_id, provider=provider, reference=reference, amount=amount)
            if not topup.succeed(amount, datetime.now(timezone.utc), operator):
                return TopUpResult(topup, 0)
            account = self.app.account(topup.account_id)
            account.grant_credits(amount, f"top-up via {provider} ({reference})", by)
            taken = take_back_held(topup, account, by)
            return TopUpResult(topup, self.app.save_all(topup, account), amount - taken)

        return self.app.retrying(use_case)

    def reject(self, provider: str, reference: str, reason: str, operator: str) -> TopUpResult:
        """An operator says the money will not come: the pending top-up can no longer be confirmed."""
        return self._change(provider, reference, lambda topup: topup.reject(reason, operator))

    def fail(self, provider: str, reference: str, reason: str) -> TopUpResult:
        return self._change(provider, reference, lambda topup: topup.fail(reason))

    def expire(self, provider: str, reference: str) -> TopUpResult:
        return self._change(provider, reference, lambda topup: topup.expire(datetime.now(timezone.utc)))

    def refund(
        self,
        provider: str,
        reference: str,
        total_refunded: int,
        by: str,
        account_id: UUID | None = None,
        amount: int | None = None,
    ) -> TopUpResult:
        """Take back what a refund adds; before the payment arrived it is held (see TopUp.refund_to). An unknown
        payment of `amount` is recorded first when the provider names the account (as `confirm` does)."""

        def use_case() -> TopUpResult:
            topup = self._load_or_record(provider, reference, amount or total_refunded, account_id)
            taken = topup.refund_to(total_refunded)
            return self._debit(topup, taken, f"refund of top-up {reference}", by)

        return self.app.retrying(use_case)

    def dispute(
        self, provider: str, reference: str, dispute_id: str, amount: int, by: str, account_id: UUID | None = None
    ) -> TopUpResult:
        def use_case() -> TopUpResult:
            topup = self._load_or_record(provider, reference, amount, account_id)
            taken = topup.dispute(dispute_id, amount)
            return self._debit(topup, taken, f"dispute {dispute_id} on top-up {reference}", by)

        return self.app.retrying(use_case)

    def _load_or_record(self, provider: str, reference: str, amount: int, account_id: UUID | None) -> TopUp:
        try:
            return self.load(provider, reference)
        except NotFound:
            if account_id is None or amount <= 0:
                raise
            return TopUp(account_id=account_id, provider=provider, reference=reference, amount=amount)

    def load(self, provider: str, reference: str) -> TopUp:
        try:
            topup = self.app.repository.get(TopUp.create_id(provider, reference))
        except AggregateNotFoundError:
            raise NotFound(f"no {provider} top-up {reference}") from None
        return topup

    def _debit(self, topup: TopUp, amount: int, reason: str, by: str) -> TopUpResult:
        if amount <= 0:  # nothing to take back (or held until the payment arrives)
            return TopUpResult(topup, self.app.save_all(topup) if topup.pending_events else 0)
        account = self.app.account(topup.account_id)
        account.debit_credits(amount, reason, by)
        return TopUpResult(topup, self.app.save_all(topup, account), -amount)

    def _change(self, provider: str, reference: str, decide) -> TopUpResult:
        def use_case() -> TopUpResult:
            topup = self.load(provider, reference)
            decide(topup)
            return TopUpResult(topup, self.app.save_all(topup) if topup.pending_events else 0)

        return self.app.retrying(use_case)
