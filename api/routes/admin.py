"""Operator routes (operator token)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from api.openapi import OPERATOR, errors
from api.auth import operator
from api.routes.models import ModelListOut, ModelOut, model_out
from api.services.admin import PRICE_FIELDS, AdminService
from api.services.provider_models import ProviderModelService
from gateway.discovery import Offer
from domain.bounds import AmountIn, AwareDatetime, Reason
from domain.credentials import VISIBLE_PREFIX_LENGTH
from domain.money import pico_to_usd


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
        self,
        admin_service: NamedDependency[AdminService],
        _operator: NamedDependency[None],
        account_id: FromPath[UUID],
        data: JSONBody[CreditGrantIn],
    ) -> CreditGrantOut:
        amount, position = await admin_service.grant_credits(account_id, data.amount_usd, data.reason)
        return CreditGrantOut(account_id, pico_to_usd(amount), position)

    @post("/topups/{reference:str}/confirm", status_code=200, responses=errors(400, 404, 409, 503))
    async def confirm_transfer(
        self,
        admin_service: NamedDependency[AdminService],
        _operator: NamedDependency[None],
        reference: FromPath[str],
        data: JSONBody[TransferIn | None] = None,
    ) -> TransferOut:
        """The money of a bank-transfer top-up arrived: credit it (once; a second confirm changes nothing)."""
        result = await admin_service.confirm_transfer(reference, data.amount_usd if data else None)
        return TransferOut(
            result.topup.id,
            result.topup.account_id,
            result.topup.status,
            pico_to_usd(result.credited),
            pico_to_usd(result.topup.received),
        )

    @post("/invites", status_code=201)
    async def create_invite(
        self,
        admin_service: NamedDependency[AdminService],
        _operator: NamedDependency[None],
        data: JSONBody[InviteIn | None] = None,
    ) -> InviteOut:
        """A single-use invite code for sign-up (MESH_SIGNUP=invite); the code is in this answer only."""
        expires_at = (data or InviteIn()).expires_at
        invite, code = await admin_service.create_invite(expires_at)
        return InviteOut(invite.id, code[:VISIBLE_PREFIX_LENGTH], invite.created_on, expires_at, "operator", code=code)

    @get("/invites")
    async def invites(
        self,
        admin_service: NamedDependency[AdminService],
        _operator: NamedDependency[None],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_INVITES_LISTED)] = 100,
    ) -> InviteListOut:
        """The newest invites, used or not (never their codes)."""
        rows = await admin_service.invites(limit)
        return InviteListOut(
            [InviteOut(r.invite_id, r.prefix, r.created_at, r.expires_at, r.by, r.used_by, r.used_at) for r in rows]
        )

    @get("/models")
    async def models(
        self, admin_service: NamedDependency[AdminService], _operator: NamedDependency[None]
    ) -> ModelListOut:
        return ModelListOut([model_out(m) for m in admin_service.models()])

    @get("/providers/{name:str}/models", responses=errors(400, 404, 502))
    async def provider_models(
        self,
        provider_model_service: NamedDependency[ProviderModelService],
        _operator: NamedDependency[None],
        name: FromPath[str],
    ) -> Offer:
        """What the provider offers (its own model list, through Mesh's credentials for it), each marked with the
        Mesh ids the catalog serves it under and its published token limits; at most MAX_MODELS models."""
        return await provider_model_service.offered(name)

    @put("/models/{model_id:path}", responses=errors(400, 404, 503))
    async def change_model(
        self,
        admin_service: NamedDependency[AdminService],
        _operator: NamedDependency[None],
        model_id: FromPath[str],
        data: JSONBody[ModelChangeIn],
    ) -> ModelOut:
        """Change a model's price and/or switch it on or off; requests that start afterwards see it."""
        given = {name: getattr(data, name) for name in PRICE_FIELDS if getattr(data, name) is not None}
        return model_out(await admin_service.change_model(model_id.lstrip("/"), given, data.enabled))
