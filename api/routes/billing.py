"""Balance of the calling account."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, Request, get
from litestar.di import Provide

from api.auth import current_account
from api.routes.bodies import AsOf
from api.runtime import BILLING, Runtime
from domain.money import pico_to_usd
from projections import billing
from projections.readmodel import position_of


class BalanceOut(msgspec.Struct):
    balance_usd: str
    credits_usd: str
    spend_usd: str
    as_of: AsOf


class BillingController(Controller):
    path = "/api/billing"
    dependencies = {"account_id": Provide(current_account)}

    @get("/balance")
    async def balance(self, request: Request, account_id: UUID) -> BalanceOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            async with conn.transaction():  # balance and position from one snapshot
                await conn.execute("set transaction isolation level repeatable read")
                b = await billing.balance_of(conn, account_id)
                position, time = await position_of(conn, BILLING)
        return BalanceOut(pico_to_usd(b.available), pico_to_usd(b.credits), pico_to_usd(b.spend),
                          AsOf(position, time))
