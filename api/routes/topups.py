"""Top-ups: start a payment (Stripe, bank transfer), list them, and Stripe's webhook."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID


import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from api.openapi import ACCOUNT, errors
from api.auth import current_account
from api.client_address import client_address
from api.security_headers import NO_STORE
from api.services.billing import BillingService
from domain.money import pico_to_usd
from domain.bounds import AmountIn, Reference
from api.payments import PROVIDERS
from projections import billing


Provider = Literal[PROVIDERS]  # type: ignore[valid-type]


class TopUpIn(msgspec.Struct, forbid_unknown_fields=True):
    invalid_code: ClassVar[dict[str, str]] = {"provider": "invalid_provider"}  # a refused field's code
    amount_usd: AmountIn
    provider: Provider = "stripe"  # one this server offers (else 409 provider_not_configured)


class TopUpOut(msgspec.Struct):
    id: UUID
    status: str
    provider: str
    amount_usd: str
    payment_intent_id: str | None = None  # Stripe
    client_secret: str | None = None  # Stripe: confirm the card payment in the browser with this
    reference: str | None = None  # bank transfer: quote it with the transfer
    instructions: str | None = None
    expires_at: datetime | None = None


class TopUpListItem(msgspec.Struct):
    id: UUID
    provider: str
    reference: str
    status: str
    amount_usd: str
    received_usd: str
    refunded_usd: str
    disputed_usd: str
    failures: int
    last_failure: str | None
    expires_at: datetime | None
    created_at: datetime


def topup_item(r: billing.TopUpRow) -> TopUpListItem:
    return TopUpListItem(
        r.id,
        r.provider,
        r.reference,
        r.status,
        pico_to_usd(r.amount),
        pico_to_usd(r.received),
        pico_to_usd(r.refunded),
        pico_to_usd(r.disputed),
        r.failures,
        r.last_failure,
        r.expires_at,
        r.created_at,
    )


class TopUpController(Controller):
    path = "/api/billing/topups"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201, cache_control=NO_STORE, responses=errors(400, 402, 409, 429, 502))
    async def start(
        self,
        request: Request,
        billing_service: NamedDependency[BillingService],
        account_id: NamedDependency[UUID],
        data: JSONBody[TopUpIn],
    ) -> TopUpOut:
        started = await billing_service.start_topup(account_id, data.provider, data.amount_usd, client_address(request))
        payment, stripe = started.payment, started.provider == "stripe"
        return TopUpOut(
            started.id,
            started.status,
            started.provider,
            pico_to_usd(started.amount),
            payment_intent_id=payment.reference if stripe else None,
            client_secret=payment.client_secret,
            reference=None if stripe else payment.reference,
            instructions=payment.instructions,
            expires_at=payment.expires_at,
        )

    @get("/")
    async def list_topups(
        self, billing_service: NamedDependency[BillingService], account_id: NamedDependency[UUID]
    ) -> list[TopUpListItem]:
        return [topup_item(r) for r in await billing_service.topups(account_id)]


class WebhookOut(msgspec.Struct):
    received: bool
    handled: bool


@post("/api/billing/stripe/webhook", status_code=200, responses=errors(400, 404, 409, 503))
async def stripe_webhook(request: Request, billing_service: NamedDependency[BillingService]) -> WebhookOut:
    """Stripe's events: a verified one is applied once however often it comes; anything unsigned,
    forged or older than five minutes is refused with 400 and changes nothing."""
    event = billing_service.verify_stripe_event(await request.body(), request.headers.get("stripe-signature"))
    return WebhookOut(True, await billing_service.apply_stripe_event(event))


class AutoRefillIn(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    threshold_usd: AmountIn | None = None
    amount_usd: AmountIn | None = None
    # a Stripe PaymentMethod (pm_...) or a card on the account's customer (card_...), saved as the auto-refill card;
    # left out: the card saved before (a card top-up paid on the dashboard with "Save this card for auto-refill")
    payment_method_id: Reference | None = None


class SavedCardOut(msgspec.Struct):
    """The saved card as Stripe describes it: never its number."""

    brand: str
    last4: str
    exp_month: int
    exp_year: int


class AutoRefillOut(msgspec.Struct):
    enabled: bool
    threshold_usd: str | None = None
    amount_usd: str | None = None
    payment_method_id: str | None = None
    refilling: bool = False
    failures: int = 0
    last_failure: str | None = None
    disabled_reason: str | None = None
    card: SavedCardOut | None = None  # the card auto-refill charges, once one is saved


class AutoRefillController(Controller):
    path = "/api/billing/auto-refill"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @get("/")
    async def show(
        self, billing_service: NamedDependency[BillingService], account_id: NamedDependency[UUID]
    ) -> AutoRefillOut:
        return auto_refill_out(await billing_service.auto_refill(account_id))

    @put("/", responses=errors(400, 402, 409, 429, 502))
    async def configure(
        self,
        request: Request,
        billing_service: NamedDependency[BillingService],
        account_id: NamedDependency[UUID],
        data: JSONBody[AutoRefillIn],
    ) -> AutoRefillOut:
        return auto_refill_out(
            await billing_service.configure_auto_refill(
                account_id,
                data.enabled,
                data.threshold_usd,
                data.amount_usd,
                data.payment_method_id,
                client_address(request),
            )
        )


def auto_refill_out(row: billing.AutoRefillRow | None) -> AutoRefillOut:
    card = None
    if row is not None and row.card_last4 is not None:
        card = SavedCardOut(row.card_brand or "", row.card_last4, row.card_exp_month or 0, row.card_exp_year or 0)
    if row is None or row.threshold is None:
        return AutoRefillOut(False, disabled_reason=row.disabled_reason if row else None, card=card)
    return AutoRefillOut(
        row.enabled,
        pico_to_usd(row.threshold),
        pico_to_usd(row.amount or 0),
        row.payment_method,
        row.pending is not None,
        row.failures,
        row.last_failure,
        row.disabled_reason,
        card,
    )
