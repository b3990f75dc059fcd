"""Payment providers: how money comes in. Stripe (cards) and bank transfer plug in side by side;
a regional gateway is one more class with the same `start` method.

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
import stripe

from domain.autorefill import SavedCard
from domain.money import PICO_PER_USD
from domain.ratelimit import AttemptWindow, RateLimited

PICO_PER_CENT = PICO_PER_USD // 100
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


def declined(exc: stripe.CardError, what: str) -> CardDeclined:
    """The CardError as the client may see it; its codes logged."""
    log.warning("%s: card declined (%s, decline code %s)", what, exc.code, getattr(exc, "decline_code", None))
    return CardDeclined()


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


class StripePayments:
    """Card payments with Stripe PaymentIntents; one Stripe customer per account."""

    name = "stripe"

    def __init__(self, secret_key: str, webhook_secret: str | None, api_base: str | None = None):
        self.client = stripe.StripeClient(secret_key, base_addresses={"api": api_base} if api_base else {})
        self.webhook_secret = webhook_secret

    def customer(self, account_id: UUID, email: str | None = None) -> str:
        try:
            created = self.client.v1.customers.create(
                params={"metadata": {"mesh_account_id": str(account_id)}, **({"email": email} if email else {})}
            )
        except stripe.StripeError as exc:
            reason = exc.user_message or type(exc).__name__
            raise PaymentError(f"Stripe could not create a customer: {reason}") from None
        return created.id

    def save_card(self, customer: str, payment_method: str, saved_at: datetime | None = None) -> SavedCard:
        """Attach a PaymentMethod to the customer (unless it is on it already) so it can be charged off-session;
        the card as Stripe describes it."""
        try:
            method = self.client.v1.payment_methods.retrieve(payment_method)
            if getattr(method, "customer", None) != customer:
                self.client.v1.payment_methods.attach(payment_method, params={"customer": customer})
        except stripe.InvalidRequestError as exc:
            raise PaymentError(
                f"Stripe does not know payment method {payment_method}: {exc.user_message or exc.code}"
            ) from None
        except stripe.CardError as exc:
            raise declined(exc, f"saving a card for customer {customer}") from None
        except stripe.StripeError as exc:
            raise PaymentError(f"Stripe failed: {exc.user_message or type(exc).__name__}") from None
        return described(method.to_dict(), saved_at or datetime.now(timezone.utc))

    def start(self, account_id: UUID, amount: int, customer: str | None) -> PaymentStart:
        try:
            intent = self.client.v1.payment_intents.create(
                params={
                    "amount": amount // PICO_PER_CENT,
                    "currency": "usd",
                    "customer": customer,
                    "payment_method_types": ["card"],
                    "metadata": {"mesh_account_id": str(account_id)},
                }
            )
        except stripe.StripeError as exc:
            raise PaymentError(f"Stripe refused the payment: {exc.user_message or type(exc).__name__}") from None
        return PaymentStart(intent.id, client_secret=intent.client_secret)

    def pay_with_token(
        self, customer: str, payment_intent: str, token: str, save_card: bool = False
    ) -> tuple[str, str]:
        """Charge a card the browser tokenised with stripe.js (`createToken`) for a started payment:
        the card is saved on the customer and the payment confirmed here. Returns (status, client secret);
        a status of requires_action asks the browser for 3-D Secure (`confirmCardPayment`). `save_card`: the
        payment's metadata says so, and its `payment_intent.succeeded` webhook makes the card (saved on the
        customer, so chargeable off-session) the account's auto-refill card."""
        try:
            card = self.client.v1.customers.payment_sources.create(customer, params={"source": token})
            params = {"payment_method": card.id, "metadata": {MESH_SAVE_CARD: "1" if save_card else ""}}
            intent = self.client.v1.payment_intents.update(payment_intent, params=params)  # "": unset (a retry)
            if intent.status == "requires_confirmation":
                intent = self.client.v1.payment_intents.confirm(payment_intent)
        except stripe.CardError as exc:
            raise declined(exc, f"paying {payment_intent}") from None
        except stripe.StripeError as exc:
            raise PaymentError(f"Stripe failed: {exc.user_message or type(exc).__name__}") from None
        return intent.status, intent.client_secret

    def charge_saved_card(
        self, account_id: UUID, customer: str, payment_method: str, amount: int, idempotency_key: str
    ) -> tuple[str, str]:
        """An off-session charge (auto-refill); returns (payment intent id, status). A retry with the
        same idempotency key never charges twice."""
        try:
            intent = self.client.v1.payment_intents.create(
                params={
                    "amount": amount // PICO_PER_CENT,
                    "currency": "usd",
                    "customer": customer,
                    "payment_method": payment_method,
                    "confirm": True,
                    "off_session": True,
                    "metadata": {"mesh_account_id": str(account_id), "mesh_auto_refill": "1"},
                },
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as exc:
            raise declined(exc, f"auto-refill of account {account_id}") from None
        except stripe.StripeError as exc:
            raise PaymentError(f"Stripe failed: {exc.user_message or type(exc).__name__}") from None
        return intent.id, intent.status

    def verify(self, payload: bytes, signature: str | None) -> dict:
        """The event, if Stripe signed it with our secret within the last five minutes; else ValueError."""
        if not self.webhook_secret:
            raise ValueError("webhooks are not configured (MESH_STRIPE_WEBHOOK_SECRET is unset)")
        if not signature:
            raise ValueError("missing Stripe-Signature header")
        try:
            stripe.WebhookSignature.verify_header(payload.decode(), signature, self.webhook_secret, tolerance=300)
        except (stripe.SignatureVerificationError, UnicodeDecodeError) as exc:
            raise ValueError(f"invalid signature: {exc}") from None
        return msgspec.json.decode(payload)


def described(method: dict, saved_at: datetime) -> SavedCard:
    """A saved card as Stripe describes it: a PaymentMethod has brand, last four digits and expiry under `card`, a
    card saved on a customer (card_...) at its top level."""
    card = method.get("card") or method
    try:
        return SavedCard(
            method["id"],
            str(card["brand"]),
            str(card["last4"]),
            int(card["exp_month"]),
            int(card["exp_year"]),
            saved_at,
        )
    except (KeyError, TypeError, ValueError):
        raise PaymentError(f"Stripe does not describe {method.get('id')} as a card") from None


# The providers Mesh knows; which of them a server offers depends on its settings (GET /api/billing/topups/providers)
PROVIDERS = (StripePayments.name, BankTransfer.name)
