"""Billing: the balance, spend history, top-ups (start, list, Stripe's webhook) and auto-refill."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Callable
from uuid import UUID

import msgspec

from psycopg_pool import AsyncConnectionPool

from api.payments import (
    STRIPE,
    MESH_SAVE_CARD,
    PENDING_TOPUP_AGE,
    BankTransfer,
    PICO_PER_CENT,
    CardDeclined,
    PaymentGuard,
    PaymentProvider,
    PaymentStart,
)
from api.read_models import BILLING
from api.services.as_of import AsOf, read_as_of
from api.services.errors import Invalid, Missing, Unavailable
from api.services.read_your_writes import ReadModelWaiter
from commands.app import NotFound
from commands.autorefill import AutoRefillCommands
from commands.topups import TopUpCommands
from domain.bounds import check_aware
from domain.money import InvalidAmount, pico_to_usd, usd_to_pico
from projections import billing
from projections.spend_history import GROUP_BY_RULE, SPEND_GROUPS, SpendRow, spend_history

if TYPE_CHECKING:
    from api.stripe_payments import StripePayments

log = logging.getLogger("mesh.api")
MAX_START_LOCKS = 10_000  # per-account top-up start locks kept; beyond, the idle ones are forgotten


class BalanceView(msgspec.Struct):
    balance: billing.Balance
    as_of: AsOf


class SpendView(msgspec.Struct):
    group_by: list[str]
    rows: list[SpendRow]
    as_of: AsOf

    @property
    def total(self) -> int:
        return sum(r.spend for r in self.rows)


class TopUpStarted(msgspec.Struct):
    id: UUID
    status: str
    provider: str
    amount: int  # pico-USD, whole cents
    payment: PaymentStart


# The longest [from, to) a spend history grouped by hour or by day may cover: each bucket is a row, and the
# dashboard draws a bar for each day.
MAX_SPAN = {"hour": timedelta(days=31), "day": timedelta(days=366)}


def check_span(groups: list[str], start: datetime | None, end: datetime | None, now: datetime | None = None) -> None:
    """Invalid, naming the bound, when a history by hour or by day covers more than MAX_SPAN (`to` left out: now).
    Without `from` it is the account's whole history: as many rows as it has hours or days with spend."""
    finest = next((g for g in MAX_SPAN if g in groups), None)
    if finest is None or start is None:
        return
    bound = MAX_SPAN[finest]
    span = (end or now or datetime.now(timezone.utc)) - start
    if span > bound:
        raise Invalid(
            f"a spend history by {finest} covers at most {bound.days} days; from {start.isoformat()} to "
            f"{end.isoformat() if end else 'now'} is {span.days} days: ask for a shorter range",
            "range_too_long",
            param="from",
        )


def parse_groups(group_by: str) -> list[str]:
    groups = list(dict.fromkeys(g.strip() for g in group_by.split(",") if g.strip()))  # "day,day" is by day
    unknown = [g for g in groups if g not in SPEND_GROUPS]
    if unknown:
        raise Invalid(f"{GROUP_BY_RULE}; got {group_by!r}", "invalid_request")
    return groups


class BillingService:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        waiter: ReadModelWaiter,
        topups: TopUpCommands,
        auto_refills: AutoRefillCommands,
        payments: dict[str, PaymentProvider],
        payment_guard: PaymentGuard,
        topup_limits: tuple[int, int],
        auto_refill_max_failures: int,
        nudge: Callable[[], None],
    ):
        self.pool = pool
        self.waiter = waiter
        self.topup_commands = topups
        self.auto_refills = auto_refills
        self.payments = payments  # the providers offered, by name
        self.payment_guard = payment_guard  # card payment attempts and pending top-ups
        self.topup_limits = topup_limits  # (lowest, highest) amount of one top-up, pico-USD
        self.auto_refill_max_failures = auto_refill_max_failures  # failed charges in a row before it turns off
        self.nudge = nudge  # wakes the projections after a webhook's change
        self._start_locks: dict[UUID, asyncio.Lock] = {}

    @property
    def stripe(self) -> StripePayments | None:
        """The card provider (a StripePayments: the only provider of that name), if this Mesh takes cards."""
        return self.payments.get(STRIPE)  # type: ignore[return-value]

    @property
    def providers(self) -> list[str]:
        return sorted(self.payments)

    async def balance(self, account_id: UUID, at: datetime | None = None, seen: int | None = None) -> BalanceView:
        """The balance now, or at any past instant; `seen`: once it shows the event at that position (waited for
        briefly: a live page heard of it on GET /api/events)."""
        check_aware(at, "at")
        if seen is not None:
            await self.waiter.caught_up(BILLING, seen)
        async with self.pool.connection() as conn:
            async with conn.transaction():  # balance and position from one snapshot
                await conn.execute("set transaction isolation level repeatable read")
                b = await (
                    billing.balance_of(conn, account_id) if at is None else billing.balance_at(conn, account_id, at)
                )
                as_of = await read_as_of(conn, BILLING)
        return BalanceView(b, as_of)

    async def spend(
        self, account_id: UUID, groups: list[str], start: datetime | None = None, end: datetime | None = None
    ) -> SpendView:
        """Spend grouped by any of provider, model, key, day, hour, over [start, end) (at most MAX_SPAN by
        hour or by day)."""
        for when, field in ((start, "from"), (end, "to")):
            if when is not None and when.utcoffset() is None:
                check_aware(when, field)  # a time without a zone is refused before any arithmetic
        check_span(groups, start, end)  # then a range too long says so, whatever the years of its ends
        check_aware(start, "from"), check_aware(end, "to")
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("set transaction isolation level repeatable read")
                rows = await spend_history(conn, account_id, groups, start, end)
                as_of = await read_as_of(conn, BILLING)
        return SpendView(groups, rows, as_of)

    async def start_topup(self, account_id: UUID, provider_name: str, amount_usd, client: str) -> TopUpStarted:
        """A top-up started: at most MESH_PENDING_TOPUPS_PER_ACCOUNT unfinished at once; a card one counts as a
        payment attempt (`client`: the caller's address)."""
        provider = self.payments.get(provider_name)
        if provider is None:
            offered = ", ".join(self.providers) or "none: no payment provider is configured"
            raise Unavailable(
                f"provider {provider_name!r} is not offered by this server; it offers: {offered}",
                "provider_not_configured",
                param="provider",
            )
        amount = usd_to_pico(amount_usd, decimals=2)  # payments move whole cents
        self._check_amount(amount)
        async with self._starting(account_id):  # one start at a time per account: each sees the one before
            await self._check_pending(account_id)
            card = provider is self.stripe
            if card:
                self.payment_guard.attempt(account_id, client)
            customer = await self._customer(account_id) if card else None
            started = await asyncio.to_thread(provider.start, account_id, amount, customer)
            result = await self.waiter.then_caught_up(
                BILLING,
                self.topup_commands.request,
                account_id,
                provider.name,
                started.reference,
                amount,
                started.expires_at,
            )
        return TopUpStarted(result.topup.id, result.topup.status, provider.name, amount, started)

    def _starting(self, account_id: UUID) -> asyncio.Lock:
        lock = self._start_locks.get(account_id)
        if lock is None:
            if len(self._start_locks) >= MAX_START_LOCKS:
                self._start_locks = {a: held for a, held in self._start_locks.items() if held.locked()}
            lock = self._start_locks[account_id] = asyncio.Lock()
        return lock

    async def _check_pending(self, account_id: UUID) -> None:
        limit = self.payment_guard.pending_topups
        since = datetime.now(timezone.utc) - PENDING_TOPUP_AGE
        async with self.pool.connection() as conn:
            pending = await billing.pending_topups(conn, account_id, since)
        if pending >= limit:
            raise Unavailable(
                f"this account has {pending} unfinished top-ups, the most it may have ({limit}); finish or wait "
                f"for one (a bank transfer until it is confirmed or expires, a card top-up for "
                f"{PENDING_TOPUP_AGE.days} day)",
                "pending_topups_exceeded",
            )

    async def pending_bank_transfer(self, account_id: UUID, reference: str) -> TopUpStarted | None:
        """A bank transfer of this account still waiting for its money, with what to send where and by when;
        None once it is confirmed or expired, or when it is not this account's."""
        bank = self.payments.get(BankTransfer.name)
        if not isinstance(bank, BankTransfer):
            return None
        now = datetime.now(timezone.utc)
        for topup in await self.topups(account_id):
            if (
                (topup.provider, topup.reference, topup.status) == (bank.name, reference, "pending")
                and topup.expires_at is not None
                and topup.expires_at > now
            ):
                instructions = bank.instructions(topup.amount, reference, topup.expires_at)
                payment = PaymentStart(reference, instructions=instructions, expires_at=topup.expires_at)
                return TopUpStarted(topup.id, topup.status, bank.name, topup.amount, payment)
        return None

    async def pending_card_topup(self, account_id: UUID, payment_intent: str) -> billing.TopUpRow:
        for topup in await self.topups(account_id):
            if topup.provider == "stripe" and topup.reference == payment_intent and topup.status == "pending":
                return topup
        raise Missing(f"no pending card top-up {payment_intent} in this account", "not_found")

    async def pay_with_card(
        self, account_id: UUID, payment_intent: str, token: str, client: str, save_card: bool = False
    ) -> tuple[str, str]:
        """Pay the account's pending card top-up `payment_intent` with a card token from stripe.js (a payment
        attempt); `save_card`: once paid, the card is the account's auto-refill card."""
        stripe = self.stripe
        if stripe is None:
            raise Invalid("card payments need Stripe, which is not configured on this server", "invalid_provider")
        await self.pending_card_topup(account_id, payment_intent)
        if not token.startswith("tok_"):
            raise Invalid("token must be a card token from stripe.js (tok_...)", "invalid_request")
        self.payment_guard.attempt(account_id, client)
        customer = await self._customer(account_id)
        return await asyncio.to_thread(stripe.pay_with_token, customer, payment_intent, token, save_card)

    async def topups(self, account_id: UUID) -> list[billing.TopUpRow]:
        async with self.pool.connection() as conn:
            return await billing.topups_of(conn, account_id)

    async def auto_refill(self, account_id: UUID) -> billing.AutoRefillRow | None:
        async with self.pool.connection() as conn:
            return await billing.auto_refill_of(conn, account_id)

    async def configure_auto_refill(
        self,
        account_id: UUID,
        enabled: bool,
        threshold_usd=None,
        amount_usd=None,
        payment_method_id: str | None = None,
        client: str = "unknown",
        names: tuple[str, str] = ("threshold_usd", "amount_usd"),
    ) -> billing.AutoRefillRow | None:
        """Turn auto-refill off, or on with the account's saved card; with `payment_method_id`, that card is
        attached to the account's Stripe customer and saved first (a payment attempt). `names`: what a refusal
        calls the threshold and the amount (the dashboard says them in words)."""
        if not enabled:
            await self.waiter.then_caught_up(
                BILLING, self.auto_refills.disable, account_id, "turned off by the account"
            )
            return await self.auto_refill(account_id)
        stripe = self.stripe
        if stripe is None:
            raise Unavailable(
                "auto-refill needs Stripe, which is not configured on this server", "provider_not_configured"
            )
        threshold_name, amount_name = names
        for value, name in ((threshold_usd, threshold_name), (amount_usd, amount_name)):
            if value is None:
                raise Invalid(f"{name} is required to turn auto-refill on", "invalid_request", param=name)
        threshold = usd_to_pico(threshold_usd, field=threshold_name, decimals=2)
        amount = usd_to_pico(amount_usd, field=amount_name, decimals=2)
        if threshold <= 0:
            raise InvalidAmount(f"{threshold_name} must be greater than zero")
        self._check_amount(amount, amount_name)
        card = None
        if payment_method_id:
            if not payment_method_id.startswith(("pm_", "card_")):
                raise Invalid(
                    "payment_method_id must be a Stripe PaymentMethod id (pm_...) or a card saved on the account's "
                    "customer (card_...)",
                    "invalid_request",
                    param="payment_method_id",
                )
            self.payment_guard.attempt(account_id, client)
            customer = await self._customer(account_id)
            card = await asyncio.to_thread(stripe.save_card, customer, payment_method_id)
        max_failures = self.auto_refill_max_failures
        await self.waiter.then_caught_up(
            BILLING, self.auto_refills.configure, account_id, threshold, amount, max_failures, card
        )
        return await self.auto_refill(account_id)

    def verify_stripe_event(self, payload: bytes, signature: str | None) -> dict:
        """Stripe's webhook event, verified; refused with 400 when unsigned, forged or stale."""
        stripe = self.stripe
        if stripe is None:
            raise Missing("Stripe is not configured (MESH_STRIPE_SECRET_KEY)", "not_found")
        try:
            return stripe.verify(payload, signature)
        except ValueError as exc:
            raise Invalid(f"webhook refused: {exc}", "invalid_signature") from None

    async def apply_stripe_event(self, event: dict) -> bool:
        """Apply a verified Stripe event once however often it comes; False when it is not one we act on."""
        try:
            handled = await asyncio.to_thread(self._apply, event)
            self.nudge()
        except NotFound as exc:
            log.warning("Stripe event %s ignored: %s", event.get("id"), exc)
            handled = False
        return handled

    def _apply(self, event: dict) -> bool:
        kind = event.get("type")
        thing = (event.get("data") or {}).get("object") or {}
        topups = self.topup_commands
        if kind == "payment_intent.succeeded":
            account = (thing.get("metadata") or {}).get("mesh_account_id")
            received = thing.get("amount_received") or thing["amount"]
            topups.confirm(
                "stripe", thing["id"], received * PICO_PER_CENT, "stripe", account_id=UUID(account) if account else None
            )
            if account and (thing.get("metadata") or {}).get(MESH_SAVE_CARD) == "1" and thing.get("payment_method"):
                self._save_paid_card(UUID(account), thing, event.get("created"))
        elif kind == "payment_intent.payment_failed":
            error = thing.get("last_payment_error") or {}
            if error.get("type") == "card_error":  # what the bank said stays in the server log (see CardDeclined)
                log.warning(
                    "payment %s: card declined (%s, decline code %s)",
                    thing["id"],
                    error.get("code"),
                    error.get("decline_code"),
                )
                reason = str(CardDeclined())
            else:
                reason = error.get("message") or error.get("code") or "payment failed"
            topups.fail("stripe", thing["id"], reason)
        elif kind == "charge.refunded" and thing.get("payment_intent"):
            account = (thing.get("metadata") or {}).get("mesh_account_id")
            topups.refund(
                "stripe",
                thing["payment_intent"],
                thing["amount_refunded"] * PICO_PER_CENT,
                "stripe",
                account_id=UUID(account) if account else None,
                amount=(thing.get("amount") or 0) * PICO_PER_CENT or None,
            )
        elif kind == "charge.dispute.created" and thing.get("payment_intent"):
            topups.dispute("stripe", thing["payment_intent"], thing["id"], thing["amount"] * PICO_PER_CENT, "stripe")
        else:
            return False
        return True

    def _save_paid_card(self, account_id: UUID, intent: dict, created: int | None) -> None:
        """The card a payment asked to save becomes the account's auto-refill card; one saved since (the webhook
        came late) stays. An error leaves the webhook unanswered: Stripe sends it again."""
        customer = self.topup_commands.stripe_customer(account_id)
        if customer is None or intent.get("customer") != customer:
            log.warning("payment %s: its customer is not account %s's; card not saved", intent["id"], account_id)
            return
        saved_at = datetime.fromtimestamp(created, timezone.utc) if created else datetime.now(timezone.utc)
        card = self.stripe.save_card(customer, intent["payment_method"], saved_at)
        self.auto_refills.save_card(account_id, card)

    def _check_amount(self, amount: int, field: str = "amount_usd") -> None:
        low, high = self.topup_limits
        if not low <= amount <= high:
            raise InvalidAmount(f"{field} must be between {pico_to_usd(low)} and {pico_to_usd(high)}")

    async def _customer(self, account_id: UUID) -> str:
        """The account's Stripe customer, made on first use."""
        customer = await asyncio.to_thread(self.topup_commands.stripe_customer, account_id)
        if customer is None:
            customer = await asyncio.to_thread(self.stripe.customer, account_id)
            await asyncio.to_thread(self.topup_commands.link_stripe_customer, account_id, customer)
        return customer
