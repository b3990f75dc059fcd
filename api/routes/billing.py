"""Balance of the calling account."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, QueryParameter

from api.openapi import ACCOUNT, errors
from api.auth import current_account
from api.services.as_of import AsOf
from api.services.billing import BillingService, parse_groups
from domain.money import pico_to_usd
from projections.spend_history import GROUP_BY_PATTERN


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
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @get("/balance", responses=errors(400))
    async def balance(
        self,
        billing_service: NamedDependency[BillingService],
        account_id: NamedDependency[UUID],
        at: FromQuery[datetime | None] = None,
    ) -> BalanceOut:
        """The balance now, or at any past instant (`?at=` an ISO 8601 time)."""
        view = await billing_service.balance(account_id, at)
        b = view.balance
        return BalanceOut(pico_to_usd(b.available), pico_to_usd(b.credits), pico_to_usd(b.spend), view.as_of)

    @get("/spend", responses=errors(400))
    async def spend(
        self,
        billing_service: NamedDependency[BillingService],
        account_id: NamedDependency[UUID],
        group_by: Annotated[str, QueryParameter(name="group_by", pattern=GROUP_BY_PATTERN)] = "day",
        start: Annotated[datetime | None, QueryParameter(name="from")] = None,
        end: Annotated[datetime | None, QueryParameter(name="to")] = None,
    ) -> SpendOut:
        """Spend grouped by any of provider, model, key, day, hour (comma-separated), over [from, to)."""
        view = await billing_service.spend(account_id, parse_groups(group_by), start, end)
        rows = view.rows
        return SpendOut(
            view.group_by,
            [
                SpendRowOut(
                    r.group,
                    r.requests,
                    r.errors,
                    r.prompt_tokens,
                    r.completion_tokens,
                    pico_to_usd(r.spend),
                    r.cached_prompt_tokens,
                    r.cache_write_tokens,
                    r.reasoning_tokens,
                )
                for r in rows
            ],
            pico_to_usd(view.total),
            sum(r.requests for r in rows),
            view.as_of,
        )
