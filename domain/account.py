"""The customer account: who may manage it, and the credits granted to it."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.autorefill import (
    ArmsRefill,
    AutoRefill,
    AutoRefillHolder,
    AutoRefillState,
    ChangesAutoRefill,
    ConfiguresAutoRefill,
    DisablesAutoRefill,
    RefillFails,
    RefillSucceeds,
    SavedCard,
    SavesCard,
    StartsRefill,
)
from domain.bounds import MAX_EMAIL_LENGTH, MAX_REASON_LENGTH, check_text
from domain.leases import ExtendsLease, GrantsLease, LeaseBook, LeaseHolder, SettlesLease
from domain.money import InvalidCreditGrant, check_amount, pico_to_usd

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidEmail(ValueError):
    pass


class InvalidReason(InvalidCreditGrant):
    """The reason an operator gives for an act is blank, too long, or holds control characters."""


class AccountSuspended(PermissionError):
    """The account is suspended by an operator: it cannot log in nor make keys, and its keys are refused."""


def normalise_email(email: str) -> str:
    email = check_text(email.strip().lower(), "email", MAX_EMAIL_LENGTH, error=InvalidEmail)
    if not EMAIL_PATTERN.match(email):
        raise InvalidEmail(f"email must look like name@example.com, got {email[:60]!r}")
    return email


class Account(LeaseHolder, AutoRefillHolder, Aggregate):
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

    class AutoRefillConfigured(ConfiguresAutoRefill, Aggregate.Event):
        threshold: int  # pico-USD: refill when the balance falls below this
        amount: int  # pico-USD to charge each time
        payment_method: str  # a Stripe PaymentMethod saved on the account's customer
        max_failures: int

    class AutoRefillDisabled(DisablesAutoRefill, Aggregate.Event):
        reason: str

    class AutoRefillCardSaved(SavesCard, Aggregate.Event):
        """The card auto-refill charges: what Stripe says of it (brand, last four digits and expiry are not
        secret); it replaces the card an auto-refill already on charges."""

        payment_method: str  # a Stripe PaymentMethod (pm_...) or a card (card_...) saved on the account's customer
        brand: str
        last4: str
        exp_month: int
        exp_year: int
        saved_at: datetime  # when Stripe took the card; a card saved later is never replaced by an earlier one

    class AutoRefillTriggered(StartsRefill, Aggregate.Event):
        refill_id: UUID  # also the Stripe idempotency key of the charge
        balance: int  # what the balance was when it crossed below the threshold

    class AutoRefillSucceeded(RefillSucceeds, Aggregate.Event):
        refill_id: UUID
        payment_intent: str

    class AutoRefillFailed(RefillFails, Aggregate.Event):
        refill_id: UUID
        reason: str

    class AutoRefillArmed(ArmsRefill, Aggregate.Event):
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
        self.refill_state = AutoRefillState()
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

    def lease(self, lease_id: UUID, amount: int, key_id: UUID, expires_at: datetime) -> None:
        self._grant_lease("account_balance", lease_id, amount, expires_at, key_id=key_id)


def check_reason(reason: str) -> str:
    """A reason an operator or a grant gives: 1 to MAX_REASON_LENGTH characters, not blank; stripped."""
    if not reason.strip():
        raise InvalidReason(f"reason must be 1 to {MAX_REASON_LENGTH} characters, not blank")
    check_text(reason, "reason", MAX_REASON_LENGTH, multiline=True, error=InvalidReason)
    return reason.strip()


# the events that change an account's auto-refill: each says what by its `refill_change`
AUTO_REFILL_EVENTS: tuple[type[ChangesAutoRefill], ...] = (
    Account.AutoRefillConfigured,
    Account.AutoRefillDisabled,
    Account.AutoRefillCardSaved,
    Account.AutoRefillTriggered,
    Account.AutoRefillSucceeded,
    Account.AutoRefillFailed,
    Account.AutoRefillArmed,
)


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
