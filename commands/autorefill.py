"""Auto-refill use cases: the account's settings, and the steps of one refill."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from commands.app import MeshApplication
from domain.autorefill import SavedCard
from domain.topup import TopUp
from commands.topups import take_back_held


class AutoRefillCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def configure(
        self, account_id: UUID, threshold: int, amount: int, max_failures: int, card: SavedCard | None = None
    ) -> int:
        """On with `card`, saved with it (one append), or with the card the account saved before."""

        def decide(account) -> None:
            if card is not None:
                account.save_auto_refill_card(*msgspec.structs.astuple(card))
            account.configure_auto_refill(threshold, amount, card.payment_method if card else None, max_failures)

        return self._change(account_id, decide)

    def save_card(self, account_id: UUID, card: SavedCard) -> int:
        return self._change(account_id, lambda a: a.save_auto_refill_card(*msgspec.structs.astuple(card)))

    def disable(self, account_id: UUID, reason: str) -> int:
        return self._change(account_id, lambda a: a.disable_auto_refill(reason))

    def trigger(self, account_id: UUID, balance: int) -> UUID | None:
        """Start a refill if the account is armed and below its threshold; the id is the charge's
        idempotency key. Concurrent managers race on the aggregate: one wins."""
        refill_id = uuid.uuid4()
        started = []
        self._change(account_id, lambda a: started.append(a.trigger_auto_refill(refill_id, balance)))
        return refill_id if started and started[-1] else None

    def succeeded(self, account_id: UUID, refill_id: UUID, payment_intent: str, amount: int) -> int:
        """Credit the charge (once, keyed by its PaymentIntent like any top-up) and close the refill."""

        def use_case() -> int:
            account = self.app.account(account_id)
            try:
                topup = self.app.repository.get(TopUp.create_id("stripe", payment_intent))
            except AggregateNotFoundError:
                topup = TopUp(account_id=account_id, provider="stripe", reference=payment_intent, amount=amount)
            if topup.succeed(amount, datetime.now(timezone.utc)):
                account.grant_credits(amount, f"auto-refill ({payment_intent})", "auto-refill")
                take_back_held(topup, account, "auto-refill")
            account.auto_refill_succeeded(refill_id, payment_intent)
            changed = [x for x in (topup, account) if x.pending_events]
            return self.app.save_all(*changed) if changed else 0

        return self.app.retrying(use_case)

    def failed(self, account_id: UUID, refill_id: UUID, reason: str) -> int:
        return self._change(account_id, lambda a: a.auto_refill_failed(refill_id, reason))

    def rearm(self, account_id: UUID, balance: int) -> int:
        return self._change(account_id, lambda a: a.rearm_auto_refill(balance))

    def _change(self, account_id: UUID, decide) -> int:
        def use_case() -> int:
            account = self.app.account(account_id)
            decide(account)
            return self.app.save_all(account) if account.pending_events else 0

        return self.app.retrying(use_case)
