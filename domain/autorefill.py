"""An account's auto-refill: its settings, the card it charges, and the state of its refills.

One charge per crossing below the threshold; off after `max_failures` failed charges in a row. The account
decides (`AutoRefillHolder`, a base of domain/account.py's Account); what each of its auto-refill events changes
is said once, by `refill_change`: the Account applies it to its state (`AutoRefillState`), and the billing read
model (projections/billing_handlers.py) writes it to the account's auto-refill row.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate

from domain.bounds import MAX_REFERENCE_LENGTH, check_text
from domain.money import InvalidCreditGrant, check_amount

_S = TypeVar("_S", bound=msgspec.Struct)
LAST4 = re.compile(r"^[0-9]{4}$")
MAX_REASON_CHARS = 500  # what a disabled or failed refill keeps of its reason
MAX_BRAND_CHARS = 40


class NoSavedCard(ValueError):
    """Auto-refill turned on without a card: the account has none saved."""


class AutoRefill(msgspec.Struct, frozen=True):
    threshold: int
    amount: int
    payment_method: str
    max_failures: int


class SavedCard(msgspec.Struct, frozen=True):
    payment_method: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    saved_at: datetime


def check_payment_method(payment_method: str) -> None:
    """A card Stripe can charge off-session: a PaymentMethod (pm_...), or a card saved on the customer (card_...,
    what a card top-up paid with a stripe.js token leaves)."""
    check_text(payment_method, "payment_method", MAX_REFERENCE_LENGTH, error=InvalidCreditGrant)
    if not payment_method.startswith(("pm_", "card_")):
        raise InvalidCreditGrant("payment_method must be a Stripe PaymentMethod id (pm_...) or a saved card (card_...)")


# What an auto-refill event changes


class AutoRefillState(msgspec.Struct, frozen=True):
    """An account's auto-refill as its events make it. `settings` stay when it is turned off (`enabled` false):
    the read model shows them; the Account keeps none while off."""

    settings: AutoRefill | None = None
    enabled: bool = False
    card: SavedCard | None = None
    armed: bool = True  # False from a refill's start until the balance is back at or above the threshold
    pending: UUID | None = None  # the refill being charged
    failures: int = 0  # failed charges in a row
    last_failure: str | None = None
    disabled_reason: str | None = None

    def changed(self, change: RefillChange) -> AutoRefillState:
        """This state with the change made."""
        fields = change.assigned()
        settings = change.settings if change.settings is not msgspec.UNSET else self.settings
        if change.payment_method is not msgspec.UNSET and settings is not None:
            settings = msgspec.structs.replace(settings, payment_method=change.payment_method)
        card = change.card if change.card is not msgspec.UNSET else self.card
        failures = fields.pop("failures", self.failures) + change.failures_added
        return msgspec.structs.replace(self, **fields, settings=settings, card=card, failures=failures)


class RefillChange(msgspec.Struct, frozen=True):
    """What one auto-refill event changes; a field left UNSET stays as it was."""

    settings: AutoRefill | msgspec.UnsetType = msgspec.UNSET
    payment_method: str | msgspec.UnsetType = msgspec.UNSET  # the card charged from now on, if there are settings
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    card: SavedCard | msgspec.UnsetType = msgspec.UNSET
    armed: bool | msgspec.UnsetType = msgspec.UNSET
    pending: UUID | None | msgspec.UnsetType = msgspec.UNSET
    failures: int | msgspec.UnsetType = msgspec.UNSET
    failures_added: int = 0
    last_failure: str | msgspec.UnsetType = msgspec.UNSET
    disabled_reason: str | None | msgspec.UnsetType = msgspec.UNSET

    def assigned(self) -> dict[str, Any]:
        """The fields it sets that are taken as they are (all but settings, payment_method, card, failures_added)."""
        return {f: getattr(self, f) for f in _ASSIGNED if getattr(self, f) is not msgspec.UNSET}


_ASSIGNED = ("enabled", "armed", "pending", "failures", "last_failure", "disabled_reason")


# The Account's auto-refill events are declared (domain/account.py) on these bases, which say what each changes.
# The bases are not dataclasses: each event's fields, in their stored order, stay on its own class.


class ChangesAutoRefill:
    """An auto-refill event: what it changes (`refill_change`), made on the account when it is applied."""

    def refill_change(self) -> RefillChange:
        raise NotImplementedError

    def apply(self, aggregate: Any) -> None:
        holder = cast(AutoRefillHolder, aggregate)
        holder.refill_state = holder.refill_state.changed(self.refill_change())


class ConfiguresAutoRefill(ChangesAutoRefill):
    """Its fields are AutoRefill's."""

    def refill_change(self) -> RefillChange:
        # a refill being charged stays pending: its outcome still closes it
        settings = _struct_of(self, AutoRefill)
        return RefillChange(settings=settings, enabled=True, armed=True, failures=0, disabled_reason=None)


class DisablesAutoRefill(ChangesAutoRefill):
    reason: str

    def refill_change(self) -> RefillChange:
        return RefillChange(enabled=False, pending=None, disabled_reason=self.reason)


class SavesCard(ChangesAutoRefill):
    """Its fields are SavedCard's."""

    def refill_change(self) -> RefillChange:
        card = _struct_of(self, SavedCard)
        return RefillChange(payment_method=card.payment_method, card=card)


def _struct_of(event: object, struct: type[_S]) -> _S:
    """The struct made of the event's fields of the same names."""
    return struct(**{name: getattr(event, name) for name in struct.__struct_fields__})


class StartsRefill(ChangesAutoRefill):
    refill_id: UUID

    def refill_change(self) -> RefillChange:
        return RefillChange(pending=self.refill_id, armed=False)


class RefillSucceeds(ChangesAutoRefill):
    def refill_change(self) -> RefillChange:
        return RefillChange(pending=None, failures=0)


class RefillFails(ChangesAutoRefill):
    reason: str

    def refill_change(self) -> RefillChange:
        # the balance is still below: the same crossing is tried again
        return RefillChange(pending=None, armed=True, failures_added=1, last_failure=self.reason)


class ArmsRefill(ChangesAutoRefill):
    def refill_change(self) -> RefillChange:
        return RefillChange(armed=True)


class AutoRefillHolder:
    """An account's auto-refill (Account), written apart from the rest of it: each public method checks the rules,
    then triggers the account's own event, whose `apply` (ChangesAutoRefill) makes its change.

    The holder declares its events on the bases above and keeps its state in the attributes below (what a
    snapshot stores), read and written together as `refill_state`."""

    AutoRefillConfigured: ClassVar[type[ConfiguresAutoRefill]]
    AutoRefillDisabled: ClassVar[type[DisablesAutoRefill]]
    AutoRefillCardSaved: ClassVar[type[SavesCard]]
    AutoRefillTriggered: ClassVar[type[StartsRefill]]
    AutoRefillSucceeded: ClassVar[type[RefillSucceeds]]
    AutoRefillFailed: ClassVar[type[RefillFails]]
    AutoRefillArmed: ClassVar[type[ArmsRefill]]
    auto_refill: AutoRefill | None  # None while off
    auto_refill_card: SavedCard | None
    auto_refill_armed: bool
    refill_pending: UUID | None
    refill_failures: int

    @property
    def refill_state(self) -> AutoRefillState:
        return AutoRefillState(
            settings=self.auto_refill,
            enabled=self.auto_refill is not None,
            card=self.auto_refill_card,
            armed=self.auto_refill_armed,
            pending=self.refill_pending,
            failures=self.refill_failures,
        )

    @refill_state.setter
    def refill_state(self, state: AutoRefillState) -> None:
        self.auto_refill = state.settings if state.enabled else None
        self.auto_refill_card = state.card
        self.auto_refill_armed = state.armed
        self.refill_pending = state.pending
        self.refill_failures = state.failures

    def save_auto_refill_card(
        self, payment_method: str, brand: str, last4: str, exp_month: int, exp_year: int, saved_at: datetime
    ) -> None:
        """Idempotent: the card saved already, or one older than the card saved (a late webhook), changes nothing."""
        check_payment_method(payment_method)
        check_text(brand, "brand", MAX_BRAND_CHARS, error=InvalidCreditGrant)
        if not LAST4.match(last4) or not 1 <= exp_month <= 12 or not 2000 <= exp_year <= 2999:
            raise InvalidCreditGrant(
                f"a card has 4 last digits and an expiry month/year, got {last4!r} {exp_month}/{exp_year}"
            )
        card = self.auto_refill_card
        if card is None or (card.payment_method != payment_method and card.saved_at <= saved_at):
            saved = SavedCard(payment_method, brand, last4, exp_month, exp_year, saved_at)
            self._trigger(self.AutoRefillCardSaved, **msgspec.structs.asdict(saved))

    def configure_auto_refill(self, threshold: int, amount: int, payment_method: str | None, max_failures: int) -> None:
        """`payment_method` None: the saved card (NoSavedCard without one)."""
        check_amount(threshold, "threshold_usd", InvalidCreditGrant, positive=True)
        check_amount(amount, "amount_usd", InvalidCreditGrant, positive=True)
        if payment_method is None:
            if self.auto_refill_card is None:
                raise NoSavedCard(
                    'no card is saved for auto-refill: pay a card top-up with "Save this card for auto-refill" '
                    "ticked (the API: give payment_method_id)"
                )
            payment_method = self.auto_refill_card.payment_method
        check_payment_method(payment_method)
        settings = AutoRefill(threshold, amount, payment_method, max_failures)
        self._trigger(self.AutoRefillConfigured, **msgspec.structs.asdict(settings))

    def disable_auto_refill(self, reason: str) -> None:
        if self.auto_refill is not None:
            self._trigger(self.AutoRefillDisabled, reason=reason[:MAX_REASON_CHARS])

    def trigger_auto_refill(self, refill_id: UUID, balance: int) -> bool:
        """The balance was seen below the threshold; True if this starts a refill."""
        refill = self.auto_refill
        if (
            refill is None
            or self.refill_pending is not None
            or not self.auto_refill_armed
            or balance >= refill.threshold
        ):
            return False
        self._trigger(self.AutoRefillTriggered, refill_id=refill_id, balance=balance)
        return True

    def auto_refill_succeeded(self, refill_id: UUID, payment_intent: str) -> None:
        if self.refill_pending == refill_id:
            self._trigger(self.AutoRefillSucceeded, refill_id=refill_id, payment_intent=payment_intent)

    def auto_refill_failed(self, refill_id: UUID, reason: str) -> None:
        """A failed charge; the same crossing is tried again until `max_failures` in a row turn it off."""
        if self.refill_pending != refill_id or self.auto_refill is None:
            return
        self._trigger(self.AutoRefillFailed, refill_id=refill_id, reason=reason[:MAX_REASON_CHARS])
        if self.refill_failures >= self.auto_refill.max_failures:
            self.disable_auto_refill(
                f"turned off after {self.refill_failures} failed charges in a row; last: {reason[:300]}"
            )

    def rearm_auto_refill(self, balance: int) -> None:
        if (
            self.auto_refill is not None
            and not self.auto_refill_armed
            and self.refill_pending is None
            and balance >= self.auto_refill.threshold
        ):
            self._trigger(self.AutoRefillArmed)

    def _trigger(self, event_class: type[Any], **fields: Any) -> None:
        cast(Aggregate, self).trigger_event(event_class, **fields)
