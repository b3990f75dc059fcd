"""Card payments with Stripe: a module of its own, so that the Stripe SDK is imported only by a Mesh that takes
cards (MESH_STRIPE_SECRET_KEY)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import msgspec
import stripe

from api.payments import MESH_SAVE_CARD, PICO_PER_CENT, STRIPE, CardDeclined, PaymentError, PaymentStart, log
from domain.autorefill import SavedCard


def declined(exc: stripe.CardError, what: str) -> CardDeclined:
    """The CardError as the client may see it; its codes logged."""
    log.warning("%s: card declined (%s, decline code %s)", what, exc.code, getattr(exc, "decline_code", None))
    return CardDeclined()


class StripePayments:
    """Card payments with Stripe PaymentIntents; one Stripe customer per account."""

    name = STRIPE

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
                params=_intent(account_id, amount, customer, payment_method_types=["card"])
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
                params=_intent(
                    account_id,
                    amount,
                    customer,
                    {"mesh_auto_refill": "1"},
                    payment_method=payment_method,
                    confirm=True,
                    off_session=True,
                ),
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


def _intent(
    account_id: UUID, amount: int, customer: str | None, metadata: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    """A PaymentIntent's parameters: `amount` pico-USD as whole US cents, for the account's customer, the account
    in its metadata (the webhook finds it there), and `fields`."""
    return {
        "amount": amount // PICO_PER_CENT,
        "currency": "usd",
        "customer": customer,
        **fields,
        "metadata": {"mesh_account_id": str(account_id), **(metadata or {})},
    }


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
