"""Payment providers: how money comes in. Stripe (cards, api/stripe_payments.py) and bank transfer plug in side by
side; a regional gateway is one more class with the same `start` method.

A provider starts a payment and names it with its own reference; the top-up
use cases (commands/topups.py) record and credit it, keyed by that reference.
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta, timezone
import time
from typing import Callable, Protocol
from uuid import UUID

import msgspec

from domain.money import PICO_PER_USD
from domain.ratelimit import AttemptWindow, RateLimited

PICO_PER_CENT = PICO_PER_USD // 100
STRIPE = "stripe"  # the card provider's name (api/stripe_payments.py, imported only where Stripe is configured)
MESH_SAVE_CARD = "mesh_save_card"  # a PaymentIntent's metadata: its card becomes the auto-refill card once paid
log = logging.getLogger("mesh.payments")


class PaymentStart(msgspec.Struct, frozen=True):
    reference: str  # the provider's id for the payment
    client_secret: str | None = None  # Stripe: what the browser confirms the card payment with
    instructions: str | None = None  # bank transfer: what to send where
    expires_at: datetime | None = None


class PaymentProvider(Protocol):
    name: str

    def start(self, account_id: UUID, amount: int, customer: str | None) -> PaymentStart:
        """Start a payment of `amount` pico-USD for the account."""


class PaymentError(RuntimeError):
    """The provider refused or failed; the message is safe to show (no secrets)."""


class CardDeclined(PaymentError):
    """The bank declined the card. The client is told only that: the bank's decline code would help someone
    testing stolen cards, so it goes to the server log alone."""

    def __init__(self) -> None:
        super().__init__("the card was declined; try another card or ask your bank")


DEFAULT_PAYMENT_ATTEMPTS_PER_ACCOUNT = 10
DEFAULT_PAYMENT_ATTEMPTS_PER_ADDRESS = 30
DEFAULT_PAYMENT_WINDOW = 3600.0
DEFAULT_PENDING_TOPUPS = 5
PENDING_TOPUP_AGE = timedelta(days=1)  # a card top-up not finished after this no longer counts as pending


class PaymentGuard:
    """Limits on card payment attempts (a card top-up started or charged, a card saved for auto-refill), per
    account and per client address, against card testing: each attempt counts, whatever its outcome. In memory,
    per process (like the login limits). Also holds the bound on an account's pending top-ups."""

    def __init__(
        self,
        per_account: int = DEFAULT_PAYMENT_ATTEMPTS_PER_ACCOUNT,
        per_address: int = DEFAULT_PAYMENT_ATTEMPTS_PER_ADDRESS,
        window_seconds: float = DEFAULT_PAYMENT_WINDOW,
        pending_topups: int = DEFAULT_PENDING_TOPUPS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.by_account = AttemptWindow(per_account, window_seconds, "payment attempts for this account", clock)
        self.by_address = AttemptWindow(per_address, window_seconds, "payment attempts from this address", clock)
        self.pending_topups = pending_topups

    def attempt(self, account_id: UUID, address: str) -> None:
        """Count one attempt, or raise RateLimited (429 with Retry-After) counting nothing."""
        self.by_account.acquire(str(account_id))
        try:
            self.by_address.acquire(address)
        except RateLimited:
            self.by_account.release(str(account_id))
            raise


class BankTransfer:
    """A pending top-up with a payment reference; the operator confirms it when the money arrives."""

    name = "bank_transfer"

    def __init__(self, valid_for: timedelta, account_details: str):
        self.valid_for = valid_for
        self.account_details = account_details

    def start(self, account_id: UUID, amount: int, customer: str | None) -> PaymentStart:
        reference = "MESH-" + secrets.token_hex(5).upper()
        expires_at = datetime.now(timezone.utc) + self.valid_for
        return PaymentStart(
            reference, instructions=self.instructions(amount, reference, expires_at), expires_at=expires_at
        )

    def instructions(self, amount: int, reference: str, expires_at: datetime) -> str:
        """What to send where, by when: shown when the transfer starts and whenever its page is opened again."""
        return (
            f"Transfer {amount // PICO_PER_USD}.{amount % PICO_PER_USD // PICO_PER_CENT:02d} USD to "
            f"{self.account_details} with the reference "
            f"{reference} before {expires_at:%Y-%m-%d %H:%M} UTC."
        )


# The providers Mesh knows; which of them a server offers depends on its settings (GET /api/billing/topups/providers)
PROVIDERS = (STRIPE, BankTransfer.name)
