"""Operator routes (operator token)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post, put
from litestar.di import Provide
from litestar.params import Parameter

from api.openapi import OPERATOR, errors
from api.auth import operator
from api.errors import ApiError
from api.routes.models import ModelListOut, ModelOut, model_out
from api.runtime import BILLING, DIRECTORY, Runtime
from domain.bounds import AmountIn, AwareDatetime, Reason
from domain.credentials import VISIBLE_PREFIX_LENGTH
from domain.money import pico_to_usd, usd_to_pico
from domain.pricing import Price
from projections import directory


class CreditGrantIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_usd: AmountIn
    reason: Reason


class CreditGrantOut(msgspec.Struct):
    account_id: UUID
    amount_usd: str
    position: int


class ModelChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool | None = None
    prompt_usd_per_1k: AmountIn | None = None
    completion_usd_per_1k: AmountIn | None = None
    cached_prompt_usd_per_1k: AmountIn | None = None
    cache_write_usd_per_1k: AmountIn | None = None


PRICE_FIELDS = (  # in the order of Price's fields
    "prompt_usd_per_1k",
    "completion_usd_per_1k",
    "cached_prompt_usd_per_1k",
    "cache_write_usd_per_1k",
)


def _usd_or_none(pico: int | None) -> str | None:
    return pico_to_usd(pico) if pico is not None else None


class TransferIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_usd: AmountIn | None = None  # what arrived; default: the amount asked for


class TransferOut(msgspec.Struct):
    id: UUID
    account_id: UUID
    status: str
    credited_usd: str  # by this call: 0 when it was already confirmed
    received_usd: str


class InviteIn(msgspec.Struct, forbid_unknown_fields=True):
    expires_at: AwareDatetime | None = None  # null: valid until used


class InviteOut(msgspec.Struct):
    id: UUID
    prefix: str  # the code's first characters, as listings show it
    created_at: datetime
    expires_at: datetime | None
    by: str
    used_by: UUID | None = None  # the account it admitted
    used_at: datetime | None = None
    code: str | None = None  # only in the answer that made it: shown once


class InviteListOut(msgspec.Struct):
    data: list[InviteOut]  # newest first


MAX_INVITES_LISTED = 500


class AdminController(Controller):
    path = "/admin"
    security = OPERATOR
    dependencies = {"_operator": Provide(operator)}

    @post("/accounts/{account_id:uuid}/credits", status_code=201, responses=errors(400, 404, 503))
    async def grant_credits(
        self, request: Request, _operator: None, account_id: UUID, data: CreditGrantIn
    ) -> CreditGrantOut:
        runtime: Runtime = request.app.state.runtime
        amount = usd_to_pico(data.amount_usd)
        position = await asyncio.to_thread(runtime.accounts.grant_credits, account_id, amount, data.reason, "operator")
        await runtime.caught_up(BILLING, position)
        return CreditGrantOut(account_id, pico_to_usd(amount), position)

    @post("/topups/{reference:str}/confirm", status_code=200, responses=errors(400, 404, 409, 503))
    async def confirm_transfer(
        self, request: Request, _operator: None, reference: str, data: TransferIn | None = None
    ) -> TransferOut:
        """The money of a bank-transfer top-up arrived: credit it (once; a second confirm changes nothing)."""
        runtime: Runtime = request.app.state.runtime
        topup = await asyncio.to_thread(runtime.topups.load, "bank_transfer", reference)
        amount = usd_to_pico(data.amount_usd, decimals=2) if data and data.amount_usd is not None else topup.amount
        result = await asyncio.to_thread(runtime.topups.confirm, "bank_transfer", reference, amount, "operator")
        await runtime.caught_up(BILLING, result.position)
        return TransferOut(
            result.topup.id,
            result.topup.account_id,
            result.topup.status,
            pico_to_usd(result.credited),
            pico_to_usd(result.topup.received),
        )

    @post("/invites", status_code=201)
    async def create_invite(self, request: Request, _operator: None, data: InviteIn | None = None) -> InviteOut:
        """A single-use invite code for sign-up (MESH_SIGNUP=invite); the code is in this answer only."""
        runtime: Runtime = request.app.state.runtime
        expires_at = (data or InviteIn()).expires_at
        invite, code, position = await asyncio.to_thread(runtime.accounts.create_invite, expires_at, "operator")
        await runtime.caught_up(DIRECTORY, position)
        return InviteOut(invite.id, code[:VISIBLE_PREFIX_LENGTH], invite.created_on, expires_at, "operator", code=code)

    @get("/invites")
    async def invites(
        self, request: Request, _operator: None, limit: Annotated[int, Parameter(ge=1, le=MAX_INVITES_LISTED)] = 100
    ) -> InviteListOut:
        """The newest invites, used or not (never their codes)."""
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            rows = await directory.invites(conn, limit)
        return InviteListOut(
            [InviteOut(r.invite_id, r.prefix, r.created_at, r.expires_at, r.by, r.used_by, r.used_at) for r in rows]
        )

    @get("/models")
    async def models(self, request: Request, _operator: None) -> ModelListOut:
        runtime: Runtime = request.app.state.runtime
        return ModelListOut([model_out(m) for m in sorted(runtime.catalog.models.values(), key=lambda m: m.id)])

    @put("/models/{model_id:path}", responses=errors(400, 404, 503))
    async def change_model(self, request: Request, _operator: None, model_id: str, data: ModelChangeIn) -> ModelOut:
        """Change a model's price and/or switch it on or off; requests that start afterwards see it."""
        runtime: Runtime = request.app.state.runtime
        model_id = model_id.lstrip("/")
        model = runtime.catalog.models.get(model_id)
        if model is None:
            raise ApiError(404, f"no model {model_id!r} in mesh.toml; GET /admin/models lists them", "not_found")
        price = None
        given = {name: getattr(data, name) for name in PRICE_FIELDS if getattr(data, name) is not None}
        if given:  # the prices not given stay as they are (cache prices left unset keep following the prompt price)
            kept = dict(zip(PRICE_FIELDS, map(_usd_or_none, msgspec.structs.astuple(model.price))))
            price = Price.from_usd(**{**kept, **given})
        await asyncio.to_thread(runtime.catalog_commands.change, model_id, price, data.enabled, "operator")
        runtime.catalog.apply(model_id, price, data.enabled)  # at once here; other processes hear the event
        return model_out(runtime.catalog.models[model_id])
