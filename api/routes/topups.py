"""Top-ups: start a payment (Stripe, bank transfer), list them, and Stripe's webhook."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import Provide

from api.auth import current_account
from api.errors import ApiError
from api.payments import PICO_PER_CENT, StripePayments
from api.runtime import BILLING, Runtime
from commands.app import NotFound
from domain.bounds import AmountIn, Reference
from domain.money import InvalidAmount, pico_to_usd, usd_to_pico
from projections import billing

log = logging.getLogger("mesh.api")


class TopUpIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_usd: AmountIn
    provider: Reference = "stripe"


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


class TopUpController(Controller):
    path = "/api/billing/topups"
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201)
    async def start(self, request: Request, account_id: UUID, data: TopUpIn) -> TopUpOut:
        runtime: Runtime = request.app.state.runtime
        provider = runtime.payments.get(data.provider)
        if provider is None:
            raise ApiError(400, f"provider {data.provider!r} is not available; choose one of: "
                                f"{', '.join(sorted(runtime.payments))}", "invalid_provider")
        amount = usd_to_pico(data.amount_usd, decimals=2)  # payments move whole cents
        low, high = runtime.topup_limits
        if not low <= amount <= high:
            raise InvalidAmount(f"amount_usd must be between {pico_to_usd(low)} and {pico_to_usd(high)}")
        customer = None
        if isinstance(provider, StripePayments):
            customer = await asyncio.to_thread(runtime.topups.stripe_customer, account_id)
            if customer is None:
                customer = await asyncio.to_thread(provider.customer, account_id)
                await asyncio.to_thread(runtime.topups.link_stripe_customer, account_id, customer)
        started = await asyncio.to_thread(provider.start, account_id, amount, customer)
        result = await asyncio.to_thread(runtime.topups.request, account_id, provider.name, started.reference,
                                         amount, started.expires_at)
        await runtime.caught_up(BILLING, result.position)
        stripe = provider.name == "stripe"
        return TopUpOut(result.topup.id, result.topup.status, provider.name, pico_to_usd(amount),
                        payment_intent_id=started.reference if stripe else None,
                        client_secret=started.client_secret,
                        reference=None if stripe else started.reference,
                        instructions=started.instructions, expires_at=started.expires_at)

    @get("/")
    async def list_topups(self, request: Request, account_id: UUID) -> list[TopUpListItem]:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            rows = await billing.topups_of(conn, account_id)
        return [TopUpListItem(r.id, r.provider, r.reference, r.status, pico_to_usd(r.amount),
                              pico_to_usd(r.received), pico_to_usd(r.refunded), pico_to_usd(r.disputed), r.failures,
                              r.last_failure, r.expires_at, r.created_at) for r in rows]


class WebhookOut(msgspec.Struct):
    received: bool
    handled: bool


@post("/api/billing/stripe/webhook", status_code=200)
async def stripe_webhook(request: Request) -> WebhookOut:
    """Stripe's events: a verified one is applied once however often it comes; anything unsigned,
    forged or older than five minutes is refused with 400 and changes nothing."""
    runtime: Runtime = request.app.state.runtime
    stripe = runtime.payments.get("stripe")
    if not isinstance(stripe, StripePayments):
        raise ApiError(404, "Stripe is not configured (MESH_STRIPE_SECRET_KEY)", "not_found")
    try:
        event = stripe.verify(await request.body(), request.headers.get("stripe-signature"))
    except ValueError as exc:
        raise ApiError(400, f"webhook refused: {exc}", "invalid_signature") from None
    try:
        handled = await asyncio.to_thread(_apply, runtime, event)
        runtime.nudge()
    except NotFound as exc:
        log.warning("Stripe event %s ignored: %s", event.get("id"), exc)
        handled = False
    return WebhookOut(True, handled)


def _apply(runtime: Runtime, event: dict) -> bool:
    kind = event.get("type")
    thing = (event.get("data") or {}).get("object") or {}
    topups = runtime.topups
    if kind == "payment_intent.succeeded":
        account = (thing.get("metadata") or {}).get("mesh_account_id")
        received = thing.get("amount_received") or thing["amount"]
        topups.confirm("stripe", thing["id"], received * PICO_PER_CENT, "stripe",
                       account_id=UUID(account) if account else None)
    elif kind == "payment_intent.payment_failed":
        error = thing.get("last_payment_error") or {}
        topups.fail("stripe", thing["id"], error.get("message") or error.get("code") or "payment failed")
    elif kind == "charge.refunded" and thing.get("payment_intent"):
        topups.refund("stripe", thing["payment_intent"], thing["amount_refunded"] * PICO_PER_CENT, "stripe")
    elif kind == "charge.dispute.created" and thing.get("payment_intent"):
        topups.dispute("stripe", thing["payment_intent"], thing["id"], thing["amount"] * PICO_PER_CENT, "stripe")
    else:
        return False
    return True



class AutoRefillIn(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool = True
    threshold_usd: AmountIn | None = None
    amount_usd: AmountIn | None = None
    payment_method_id: Reference | None = None  # a Stripe PaymentMethod (pm_...) the dashboard collected


class AutoRefillOut(msgspec.Struct):
    enabled: bool
    threshold_usd: str | None = None
    amount_usd: str | None = None
    payment_method_id: str | None = None
    refilling: bool = False
    failures: int = 0
    last_failure: str | None = None
    disabled_reason: str | None = None


class AutoRefillController(Controller):
    path = "/api/billing/auto-refill"
    dependencies = {"account_id": Provide(current_account)}

    @get("/")
    async def show(self, request: Request, account_id: UUID) -> AutoRefillOut:
        return await _auto_refill_out(request.app.state.runtime, account_id)

    @put("/")
    async def configure(self, request: Request, account_id: UUID, data: AutoRefillIn) -> AutoRefillOut:
        runtime: Runtime = request.app.state.runtime
        if not data.enabled:
            position = await asyncio.to_thread(runtime.auto_refill.disable, account_id, "turned off by the account")
        else:
            stripe = runtime.payments.get("stripe")
            if not isinstance(stripe, StripePayments):
                raise ApiError(400, "auto-refill needs Stripe, which is not configured on this server",
                               "invalid_provider")
            if data.threshold_usd is None or data.amount_usd is None or not data.payment_method_id:
                raise ApiError(400, "threshold_usd, amount_usd and payment_method_id are required to turn "
                                    "auto-refill on", "invalid_request")
            threshold = usd_to_pico(data.threshold_usd, field="threshold_usd", decimals=2)
            amount = usd_to_pico(data.amount_usd, field="amount_usd", decimals=2)
            low, high = runtime.topup_limits
            if not low <= amount <= high:
                raise InvalidAmount(f"amount_usd must be between {pico_to_usd(low)} and {pico_to_usd(high)}")
            if threshold <= 0:
                raise InvalidAmount("threshold_usd must be greater than zero")
            if not data.payment_method_id.startswith("pm_"):
                raise ApiError(400, "payment_method_id must be a Stripe PaymentMethod id (pm_...)",
                               "invalid_request")
            customer = await asyncio.to_thread(runtime.topups.stripe_customer, account_id)
            if customer is None:
                customer = await asyncio.to_thread(stripe.customer, account_id)
                await asyncio.to_thread(runtime.topups.link_stripe_customer, account_id, customer)
            await asyncio.to_thread(stripe.save_card, customer, data.payment_method_id)
            position = await asyncio.to_thread(runtime.auto_refill.configure, account_id, threshold, amount,
                                               data.payment_method_id, runtime.auto_refill_max_failures)
        await runtime.caught_up(BILLING, position)
        return await _auto_refill_out(runtime, account_id)


async def _auto_refill_out(runtime: Runtime, account_id: UUID) -> AutoRefillOut:
    async with runtime.pool.connection() as conn:
        row = await billing.auto_refill_of(conn, account_id)
    if row is None or row.threshold is None:
        return AutoRefillOut(False, disabled_reason=row.disabled_reason if row else None)
    return AutoRefillOut(row.enabled, pico_to_usd(row.threshold), pico_to_usd(row.amount or 0), row.payment_method,
                         row.pending is not None, row.failures, row.last_failure, row.disabled_reason)
