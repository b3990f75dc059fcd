"""The customer account: who may manage it, and the credits granted to it."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.bounds import MAX_EMAIL_LENGTH, MAX_REASON_LENGTH, MAX_REFERENCE_LENGTH, check_text
from domain.leases import ExtendsLease, GrantsLease, LeaseBook, LeaseHolder, SettlesLease
from domain.money import check_amount, pico_to_usd

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidEmail(ValueError):
    pass


class InvalidCreditGrant(ValueError):
    pass


class InvalidReason(InvalidCreditGrant):
    """The reason an operator gives for an act is blank, too long, or holds control characters."""


class AccountSuspended(PermissionError):
    """The account is suspended by an operator: it cannot log in nor make keys, and its keys are refused."""


class NoSavedCard(ValueError):
    """Auto-refill turned on without a card: the account has none saved."""


LAST4 = re.compile(r"^[0-9]{4}$")


def normalise_email(email: str) -> str:
    email = check_text(email.strip().lower(), "email", MAX_EMAIL_LENGTH, error=InvalidEmail)
    if not EMAIL_PATTERN.match(email):
        raise InvalidEmail(f"email must look like name@example.com, got {email[:60]!r}")
    return email


class Account(LeaseHolder, Aggregate):
    class Registered(Aggregate.Created):
        email: str
        password_hash: str
        token_hash: str
        token_expires_at: datetime | None = None  # None: issued before tokens expired

    class TokenIssued(Aggregate.Event):
        token_hash: str
        expires_at: datetime | None = None  # None: issued before tokens expired

    class CreditsGranted(Aggregate.Event):
        amount: int  # pico-USD, > 0
        reason: str
        granted_by: str
        operator: str | None = None  # the acting operator (an account id, or "token"); None: not an operator's act

    class StripeCustomerLinked(Aggregate.Event):
        customer_id: str

    class CreditsDebited(Aggregate.Event):
        amount: int  # pico-USD taken back (a refund, a dispute), > 0
        reason: str
        debited_by: str
        operator: str | None = None  # the acting operator (an account id, or "token"); None: not an operator's act

    class AutoRefillConfigured(Aggregate.Event):
        threshold: int  # pico-USD: refill when the balance falls below this
        amount: int  # pico-USD to charge each time
        payment_method: str  # a Stripe PaymentMethod saved on the account's customer
        max_failures: int

    class AutoRefillDisabled(Aggregate.Event):
        reason: str

    class AutoRefillCardSaved(Aggregate.Event):
        """The card auto-refill charges: what Stripe says of it (brand, last four digits and expiry are not
        secret); it replaces the card an auto-refill already on charges."""

        payment_method: str  # a Stripe PaymentMethod (pm_...) or a card (card_...) saved on the account's customer
        brand: str
        last4: str
        exp_month: int
        exp_year: int
        saved_at: datetime  # when Stripe took the card; a card saved later is never replaced by an earlier one

    class AutoRefillTriggered(Aggregate.Event):
        refill_id: UUID  # also the Stripe idempotency key of the charge
        balance: int  # what the balance was when it crossed below the threshold

    class AutoRefillSucceeded(Aggregate.Event):
        refill_id: UUID
        payment_intent: str

    class AutoRefillFailed(Aggregate.Event):
        refill_id: UUID
        reason: str

    class AutoRefillArmed(Aggregate.Event):
        """The balance is back at or above the threshold: the next crossing below refills again."""

    class BudgetLeased(GrantsLease, Aggregate.Event):
        lease_id: UUID
        amount: int  # pico-USD reserved for the holder until settled
        key_id: UUID
        expires_at: datetime

    class LeaseSettled(SettlesLease, Aggregate.Event):
        lease_id: UUID
        spent: int  # what the lease really paid for; the rest returns to the balance

    class LeaseExtended(ExtendsLease, Aggregate.Event):
        """The lease's holder still has requests running on it: it expires later (the reaper waits)."""

        lease_id: UUID
        expires_at: datetime

    class TokenRenewed(Aggregate.Event):
        """A management token in use lives longer (sliding expiry); at most about once a day per token."""

        token_hash: str
        expires_at: datetime

    class TokenRevoked(Aggregate.Event):
        token_hash: str

    class PasswordChanged(Aggregate.Event):
        """A new password; every management token issued before it stops working."""

        password_hash: str

    class PasswordRehashed(Aggregate.Event):
        """The same password, hashed again with today's KDF parameters; tokens stay valid."""

        password_hash: str

    class OperatorGranted(Aggregate.Event):
        """The account's owner is one of this Mesh's operators (`mesh operators add`)."""

        by: str  # who gave the role: "cli", or the acting operator

    class OperatorRevoked(Aggregate.Event):
        by: str

    class Suspended(Aggregate.Event):
        """An operator stopped the account: its keys are refused, it cannot log in or make keys. Nothing is
        deleted; `account.resumed` undoes it."""

        reason: str
        operator: str  # an account id, or "token"

    class Resumed(Aggregate.Event):
        reason: str
        operator: str

    @event(Registered)
    def __init__(self, email: str, password_hash: str, token_hash: str, token_expires_at: datetime | None = None):
        self.email = email
        self.password_hash = password_hash
        self.password_changes = 0  # a rehash (same password, stronger hash) does not count
        self.token_hashes = {token_hash}
        self.credits = 0
        self.leases = LeaseBook()
        self.stripe_customer: str | None = None
        self.auto_refill: AutoRefill | None = None
        self.auto_refill_card: SavedCard | None = None
        self.auto_refill_armed = True
        self.refill_pending: UUID | None = None
        self.refill_failures = 0
        self.operator = False
        self.suspended: str | None = None  # the reason, while suspended

    @property
    def leasable(self) -> int:
        """Credits not yet spent nor reserved by an open lease."""
        return self.credits - self.spent_and_reserved

    # Management tokens: issued at sign-up, log-in and password change; renewed while in use; revoked at
    # log-out; all revoked by a password change.

    def issue_token(self, token_hash: str, expires_at: datetime | None = None) -> None:
        self._issue_token(token_hash, expires_at)

    @event(TokenIssued)
    def _issue_token(self, token_hash: str, expires_at: datetime | None) -> None:
        self.token_hashes.add(token_hash)

    def renew_token(self, token_hash: str, expires_at: datetime) -> None:
        """Only a live token is renewed: a revoked one never comes back."""
        if token_hash in self.token_hashes:
            self._renew_token(token_hash, expires_at)

    @event(TokenRenewed)
    def _renew_token(self, token_hash: str, expires_at: datetime) -> None:
        pass

    def revoke_token(self, token_hash: str) -> None:
        """Idempotent: revoking a token that is not live changes nothing."""
        if token_hash in self.token_hashes:
            self._revoke_token(token_hash)

    @event(TokenRevoked)
    def _revoke_token(self, token_hash: str) -> None:
        self.token_hashes.discard(token_hash)

    def change_password(self, password_hash: str, token_hash: str, expires_at: datetime) -> None:
        """A new password revokes every token; the caller goes on with the one issued here."""
        self._change_password(password_hash)
        self._issue_token(token_hash, expires_at)

    @event(PasswordChanged)
    def _change_password(self, password_hash: str) -> None:
        self.password_hash = password_hash
        self.password_changes += 1
        self.token_hashes = set()

    def rehash_password(self, password_hash: str) -> None:
        self._rehash_password(password_hash)

    @event(PasswordRehashed)
    def _rehash_password(self, password_hash: str) -> None:
        self.password_hash = password_hash

    def grant_credits(self, amount: int, reason: str, granted_by: str, operator: str | None = None) -> None:
        check_amount(amount, "amount_usd", InvalidCreditGrant, positive=True)
        self._grant_credits(amount, check_reason(reason), granted_by, operator)

    @event(CreditsGranted)
    def _grant_credits(self, amount: int, reason: str, granted_by: str, operator: str | None = None) -> None:
        self.credits += amount

    def take_back_credits(self, amount: int, reason: str, operator: str) -> None:
        """An operator takes credits back: at most what is neither spent nor reserved by an open lease, so the
        balance never goes below zero by an operator's hand and every admitted request stays paid for."""
        check_amount(amount, "amount_usd", InvalidCreditGrant, positive=True)
        reason = check_reason(reason)
        if amount > self.leasable:
            raise InvalidCreditGrant(
                f"at most {pico_to_usd(max(self.leasable, 0))} USD can be taken back: the credits neither spent "
                "nor reserved by requests running now"
            )
        self._debit_credits(amount, reason, "operator", operator)

    def grant_operator(self, by: str) -> None:
        """Idempotent: an operator already changes nothing."""
        if not self.operator:
            self._grant_operator(by)

    @event(OperatorGranted)
    def _grant_operator(self, by: str) -> None:
        self.operator = True

    def revoke_operator(self, by: str) -> None:
        if self.operator:
            self._revoke_operator(by)

    @event(OperatorRevoked)
    def _revoke_operator(self, by: str) -> None:
        self.operator = False

    def suspend(self, reason: str, operator: str) -> None:
        """Idempotent: a suspended account stays suspended for its first reason."""
        reason = check_reason(reason)
        if self.suspended is None:
            self._suspend(reason, operator)

    @event(Suspended)
    def _suspend(self, reason: str, operator: str) -> None:
        self.suspended = reason

    def resume(self, reason: str, operator: str) -> None:
        """Idempotent: an account not suspended changes nothing."""
        reason = check_reason(reason)
        if self.suspended is not None:
            self._resume(reason, operator)

    @event(Resumed)
    def _resume(self, reason: str, operator: str) -> None:
        self.suspended = None

    def check_active(self) -> None:
        """AccountSuspended while an operator holds the account suspended."""
        if self.suspended is not None:
            raise AccountSuspended(f"this account is suspended ({self.suspended}); contact the operator of this Mesh")

    def link_stripe_customer(self, customer_id: str) -> None:
        if customer_id != self.stripe_customer:
            self._link_stripe_customer(customer_id)

    @event(StripeCustomerLinked)
    def _link_stripe_customer(self, customer_id: str) -> None:
        self.stripe_customer = customer_id

    def debit_credits(self, amount: int, reason: str, debited_by: str) -> None:
        """Money taken back. The balance may go below zero: then nothing more is admitted."""
        check_amount(amount, "amount_usd", InvalidCreditGrant, positive=True)
        self._debit_credits(amount, reason, debited_by)

    @event(CreditsDebited)
    def _debit_credits(self, amount: int, reason: str, debited_by: str, operator: str | None = None) -> None:
        self.credits -= amount

    # Auto-refill: one charge per crossing below the threshold; off after `max_failures` failures in a row.

    def save_auto_refill_card(
        self, payment_method: str, brand: str, last4: str, exp_month: int, exp_year: int, saved_at: datetime
    ) -> None:
        """Idempotent: the card saved already, or one older than the card saved (a late webhook), changes nothing."""
        check_payment_method(payment_method)
        check_text(brand, "brand", 40, error=InvalidCreditGrant)
        if not LAST4.match(last4) or not 1 <= exp_month <= 12 or not 2000 <= exp_year <= 2999:
            raise InvalidCreditGrant(
                f"a card has 4 last digits and an expiry month/year, got {last4!r} {exp_month}/{exp_year}"
            )
        card = self.auto_refill_card
        if card is None or (card.payment_method != payment_method and card.saved_at <= saved_at):
            self._save_auto_refill_card(payment_method, brand, last4, exp_month, exp_year, saved_at)

    @event(AutoRefillCardSaved)
    def _save_auto_refill_card(
        self, payment_method: str, brand: str, last4: str, exp_month: int, exp_year: int, saved_at: datetime
    ) -> None:
        self.auto_refill_card = SavedCard(payment_method, brand, last4, exp_month, exp_year, saved_at)
        if self.auto_refill is not None:
            self.auto_refill = msgspec.structs.replace(self.auto_refill, payment_method=payment_method)

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
        self._configure_auto_refill(threshold, amount, payment_method, max_failures)

    @event(AutoRefillConfigured)
    def _configure_auto_refill(self, threshold: int, amount: int, payment_method: str, max_failures: int) -> None:
        self.auto_refill = AutoRefill(threshold, amount, payment_method, max_failures)
        self.auto_refill_armed = True
        self.refill_failures = 0

    def disable_auto_refill(self, reason: str) -> None:
        if self.auto_refill is not None:
            self._disable_auto_refill(reason[:500])

    @event(AutoRefillDisabled)
    def _disable_auto_refill(self, reason: str) -> None:
        self.auto_refill = None
        self.refill_pending = None

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
        self._trigger_auto_refill(refill_id, balance)
        return True

    @event(AutoRefillTriggered)
    def _trigger_auto_refill(self, refill_id: UUID, balance: int) -> None:
        self.refill_pending = refill_id
        self.auto_refill_armed = False

    def auto_refill_succeeded(self, refill_id: UUID, payment_intent: str) -> None:
        if self.refill_pending == refill_id:
            self._auto_refill_succeeded(refill_id, payment_intent)

    @event(AutoRefillSucceeded)
    def _auto_refill_succeeded(self, refill_id: UUID, payment_intent: str) -> None:
        self.refill_pending = None
        self.refill_failures = 0

    def auto_refill_failed(self, refill_id: UUID, reason: str) -> None:
        """A failed charge; the same crossing is tried again until `max_failures` in a row turn it off."""
        if self.refill_pending != refill_id or self.auto_refill is None:
            return
        self._auto_refill_failed(refill_id, reason[:500])
        if self.refill_failures >= self.auto_refill.max_failures:
            self.disable_auto_refill(
                f"turned off after {self.refill_failures} failed charges in a row; last: {reason[:300]}"
            )

    @event(AutoRefillFailed)
    def _auto_refill_failed(self, refill_id: UUID, reason: str) -> None:
        self.refill_pending = None
        self.auto_refill_armed = True  # the balance is still below: the same crossing is retried
        self.refill_failures += 1

    def rearm_auto_refill(self, balance: int) -> None:
        if (
            self.auto_refill is not None
            and not self.auto_refill_armed
            and self.refill_pending is None
            and balance >= self.auto_refill.threshold
        ):
            self._rearm_auto_refill()

    @event(AutoRefillArmed)
    def _rearm_auto_refill(self) -> None:
        self.auto_refill_armed = True

    def lease(self, lease_id: UUID, amount: int, key_id: UUID, expires_at: datetime) -> None:
        self._grant_lease("account_balance", lease_id, amount, expires_at, key_id=key_id)


def check_reason(reason: str) -> str:
    """A reason an operator or a grant gives: 1 to MAX_REASON_LENGTH characters, not blank; stripped."""
    if not reason.strip():
        raise InvalidReason(f"reason must be 1 to {MAX_REASON_LENGTH} characters, not blank")
    check_text(reason, "reason", MAX_REASON_LENGTH, multiline=True, error=InvalidReason)
    return reason.strip()


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


class AccountState(msgspec.Struct, forbid_unknown_fields=True):
    """Every attribute an Account holds, typed: what its snapshot stores (commands/snapshots.py). An attribute
    added to Account is added here too (tests/unit/test_snapshots.py fails until it is)."""

    _created_on: datetime
    _modified_on: datetime
    email: str
    password_hash: str
    password_changes: int
    token_hashes: set[str]
    credits: int
    leases: LeaseBook
    stripe_customer: str | None
    auto_refill: AutoRefill | None
    auto_refill_armed: bool
    refill_pending: UUID | None
    refill_failures: int
    auto_refill_card: SavedCard | None = None  # a default: a snapshot taken before saved cards reads as none
    operator: bool = False  # defaults: a snapshot taken before operators and suspensions reads as neither
    suspended: str | None = None


class EmailClaim(Aggregate):
    """Makes an email unique: its id is derived from the email, and it can only be created once."""

    class Claimed(Aggregate.Created):
        email: str
        account_id: UUID

    @staticmethod
    def create_id(email: str) -> UUID:
        return uuid5(NAMESPACE_URL, "mesh:email:" + email)

    @event(Claimed)
    def __init__(self, email: str, account_id: UUID):
        self.email = email
        self.account_id = account_id
