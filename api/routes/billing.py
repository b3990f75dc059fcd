"""Balance of the calling account."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec
from litestar import Controller, Request, get
from litestar.di import Provide
from litestar.params import Parameter

from api.auth import current_account
from api.errors import ApiError
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


class SpendRowOut(msgspec.Struct):
    group: dict[str, str]
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: str
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class SpendOut(msgspec.Struct):
    group_by: list[str]
    data: list[SpendRowOut]
    total_spend_usd: str
    total_requests: int
    as_of: AsOf


class BillingController(Controller):
    path = "/api/billing"
    dependencies = {"account_id": Provide(current_account)}

    @get("/balance")
    async def balance(self, request: Request, account_id: UUID,
                      at: datetime | None = Parameter(query="at", default=None)) -> BalanceOut:
        """The balance now, or at any past instant (`?at=` an ISO 8601 time)."""
        runtime: Runtime = request.app.state.runtime
        if at is not None and at.tzinfo is None:
            raise ApiError(400, "at must include a time zone, e.g. 2026-11-24T12:00:00Z", "invalid_request")
        async with runtime.pool.connection() as conn:
            async with conn.transaction():  # balance and position from one snapshot
                await conn.execute("set transaction isolation level repeatable read")
                b = await (billing.balance_of(conn, account_id) if at is None
                           else billing.balance_at(conn, account_id, at))
                position, time = await position_of(conn, BILLING)
        return BalanceOut(pico_to_usd(b.available), pico_to_usd(b.credits), pico_to_usd(b.spend),
                          AsOf(position, time))

    @get("/spend")
    async def spend(self, request: Request, account_id: UUID, group_by: str = "day",
                    start: datetime | None = Parameter(query="from", default=None),
                    end: datetime | None = Parameter(query="to", default=None)) -> SpendOut:
        """Spend grouped by any of provider, model, key, day, hour (comma-separated), over [from, to)."""
        runtime: Runtime = request.app.state.runtime
        groups = [g.strip() for g in group_by.split(",") if g.strip()]
        unknown = [g for g in groups if g not in billing.SPEND_GROUPS]
        if unknown or len(set(groups)) != len(groups):
            raise ApiError(400, f"group_by takes a comma-separated list of {', '.join(billing.SPEND_GROUPS)}; "
                                f"got {group_by!r}", "invalid_request")
        async with runtime.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("set transaction isolation level repeatable read")
                rows = await billing.spend_history(conn, account_id, groups, start, end)
                position, time = await position_of(conn, BILLING)
        return SpendOut(groups, [SpendRowOut(r.group, r.requests, r.errors, r.prompt_tokens, r.completion_tokens,
                                             pico_to_usd(r.spend), r.cached_prompt_tokens, r.cache_write_tokens,
                                             r.reasoning_tokens) for r in rows],
                        pico_to_usd(sum(r.spend for r in rows)), sum(r.requests for r in rows), AsOf(position, time))
