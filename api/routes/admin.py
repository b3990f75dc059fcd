"""Operator routes (operator token)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import msgspec
from litestar import Controller, Request, post
from litestar.di import Provide

from api.auth import operator
from api.runtime import BILLING, Runtime
from domain.money import pico_to_usd, usd_to_pico
from projections.runner import wait_for_position


class CreditGrantIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_usd: str | int | float
    reason: str


class CreditGrantOut(msgspec.Struct):
    account_id: UUID
    amount_usd: str
    position: int


class AdminController(Controller):
    path = "/admin"
    dependencies = {"_operator": Provide(operator)}

    @post("/accounts/{account_id:uuid}/credits", status_code=201)
    async def grant_credits(self, request: Request, _operator: None, account_id: UUID,
                            data: CreditGrantIn) -> CreditGrantOut:
        runtime: Runtime = request.app.state.runtime
        amount = usd_to_pico(data.amount_usd)
        position = await asyncio.to_thread(runtime.accounts.grant_credits, account_id, amount, data.reason,
                                           "operator")
        await wait_for_position(runtime.pool, BILLING, position)
        return CreditGrantOut(account_id, pico_to_usd(amount), position)
