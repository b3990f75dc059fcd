"""The auto-refill process manager: reacts to balances crossing below an account's threshold.

It reads what the events made of balances and refill states (the billing read
model), decides through the Account aggregate (so only one manager anywhere
starts a refill for a crossing), and charges the saved card off-session with
the refill's id as Stripe's idempotency key, so a retry or a restart mid-charge
never charges twice. Projections never call Stripe; this does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from api.payments import PaymentError
from commands.autorefill import AutoRefillCommands
from projections import billing
from gateway.pause import stopped_within

if TYPE_CHECKING:
    from api.stripe_payments import StripePayments

log = logging.getLogger("mesh.autorefill")

STUCK_AFTER = timedelta(seconds=30)  # a pending refill this old lost its manager: finish it


class AutoRefillManager:
    def __init__(
        self, pool: AsyncConnectionPool, commands: AutoRefillCommands, stripe: StripePayments, retry_after: float = 60.0
    ):
        self.pool = pool
        self.commands = commands
        self.stripe = stripe
        self.retry_after = retry_after  # seconds between attempts for one crossing after a failure
        self._last_failure: dict[UUID, float] = {}

    async def run(self, stop: asyncio.Event, interval: float = 0.2) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:
                log.exception("auto-refill step failed; will retry")
            await stopped_within(stop, interval)

    async def step(self) -> None:
        async with self.pool.connection() as conn:
            rows = await billing.auto_refills_to_check(conn)
        now = datetime.now(timezone.utc)
        for row in rows:
            if row.pending is not None:
                if now - row.updated_at > STUCK_AFTER:
                    await self._charge(row, row.pending)
            elif row.armed and row.balance < (row.threshold or 0):
                if time.monotonic() - self._last_failure.get(row.account_id, -1e9) < self.retry_after:
                    continue
                refill_id = await asyncio.to_thread(self.commands.trigger, row.account_id, row.balance)
                if refill_id is not None:
                    await self._charge(row, refill_id)
            elif not row.armed:
                await asyncio.to_thread(self.commands.rearm, row.account_id, row.balance)

    async def _charge(self, row: billing.AutoRefillRow, refill_id: UUID) -> None:
        if not row.customer or not row.payment_method or not row.amount:
            await asyncio.to_thread(self.commands.failed, row.account_id, refill_id, "no saved card")
            return
        try:
            payment_intent, status = await asyncio.to_thread(
                self.stripe.charge_saved_card,
                row.account_id,
                row.customer,
                row.payment_method,
                row.amount,
                f"mesh-refill-{refill_id}",
            )
        except PaymentError as exc:
            reason = str(exc)
        else:
            if status == "succeeded":
                await asyncio.to_thread(self.commands.succeeded, row.account_id, refill_id, payment_intent, row.amount)
                self._last_failure.pop(row.account_id, None)
                return
            reason = f"the charge ended as {status}"
        log.warning("auto-refill of account %s failed: %s", row.account_id, reason)
        self._last_failure[row.account_id] = time.monotonic()
        await asyncio.to_thread(self.commands.failed, row.account_id, refill_id, reason)
