"""Operator routes: the operator token, or the management token of an account with the operator role (`mesh
operators add`); each action records which operator made it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import Controller, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, JSONBody, QueryParameter

from api.openapi import OPERATOR, errors
from api.auth import operator
from api.routes.keys import KeyOut, key_out
from api.routes.models import ModelListOut, ModelOut, model_out
from api.routes.topups import TopUpListItem, topup_item
from api.services.admin import PRICE_FIELDS, AdminService
from api.services.as_of import AsOf
from api.services.operators import AUDIT_CURSOR, OperatorService
from api.services.provider_models import ProviderModelService
from api.services.support import MAX_QUERY_LENGTH, AccountDetail, SupportService
from gateway.discovery import Offer
from domain.bounds import MAX_MODEL_ID_LENGTH, MAX_REFERENCE_LENGTH, SINGLE_LINE, AmountIn, AwareDatetime, Reason
from domain.bounds import text
from domain.catalog import MAX_TOKEN_LIMIT, MAX_UPSTREAM_LENGTH
from domain.credentials import VISIBLE_PREFIX_LENGTH
from domain.money import pico_to_usd
from projections import billing, directory


class CreditGrantIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_usd: AmountIn
    reason: Reason


class CreditGrantOut(msgspec.Struct):
    account_id: UUID
    amount_usd: str
    position: int


class ReasonIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason


class AccountOut(msgspec.Struct):
    id: UUID
    email: str
    created_at: datetime
    operator: bool
    suspended: bool
    suspended_reason: str | None
    suspended_at: datetime | None
    balance_usd: str  # credits less spend
    credits_usd: str
    spend_usd: str


class AccountListOut(msgspec.Struct):
    data: list[AccountOut]  # by email
    next_cursor: str | None
    as_of: AsOf


class CreditOut(msgspec.Struct):
    time: datetime
    amount_usd: str  # negative when taken back
    kind: str
    reason: str
    by: str


class AccountDetailOut(AccountOut, kw_only=True):
    keys: list[KeyOut]
    topups: list[TopUpListItem]  # newest first
    credits: list[CreditOut]  # the newest credit movements, newest first
    last_activity: datetime | None  # the newest request of any of its keys
    as_of: AsOf


class AccountTopUpOut(TopUpListItem, kw_only=True):
    account_id: UUID
    email: str | None


class TopUpListOut(msgspec.Struct):
    data: list[AccountTopUpOut]  # newest first


class OperatorActionOut(msgspec.Struct):
    position: int
    time: datetime
    operator: str  # an account id, "token" (the shared operator token) or "cli"
    operator_email: str | None
    action: str
    event: str
    target: str  # the account, top-up or model acted on
    account_id: UUID | None
    details: dict


class AuditOut(msgspec.Struct):
    data: list[OperatorActionOut]  # newest first
    next_cursor: str | None


MAX_PAGE = 100
TopUpStatus = Literal[tuple(billing.TOPUP_STATUSES)]  # type: ignore[valid-type]


def account_out(row: directory.AccountRow, balance: billing.Balance) -> AccountOut:
    return AccountOut(
        row.account_id,
        row.email,
        row.created_at,
        row.operator,
        row.suspended is not None,
        row.suspended,
        row.suspended_at,
        pico_to_usd(balance.available),
        pico_to_usd(balance.credits),
        pico_to_usd(balance.spend),
    )


def account_detail_out(d: AccountDetail) -> AccountDetailOut:
    return AccountDetailOut(
        **msgspec.structs.asdict(account_out(d.row, d.balance)),
        keys=[key_out(k, d.key_stats.get(k.key_id)) for k in d.keys],
        topups=[topup_item(t) for t in d.topups],
        credits=[CreditOut(c.time, pico_to_usd(c.amount), c.kind, c.reason, c.by) for c in d.credits],
        last_activity=d.last_activity,
        as_of=d.as_of,
    )


TokenLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKEN_LIMIT)]


class ModelChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool | None = None
    prompt_usd_per_1k: AmountIn | None = None
    completion_usd_per_1k: AmountIn | None = None
    cached_prompt_usd_per_1k: AmountIn | None = None
    cache_write_usd_per_1k: AmountIn | None = None


class ModelAddIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, text(MAX_MODEL_ID_LENGTH, min_length=1)]  # what clients will send as "model"
    provider: Annotated[str, text(MAX_REFERENCE_LENGTH, min_length=1)]  # a provider of mesh.toml
    upstream: Annotated[str, text(MAX_UPSTREAM_LENGTH, min_length=1)]  # the provider's own model name
    prompt_usd_per_1k: AmountIn  # "0" for a free model
    completion_usd_per_1k: AmountIn
    cached_prompt_usd_per_1k: AmountIn | None = None  # default: the prompt price
    cache_write_usd_per_1k: AmountIn | None = None  # default: the prompt price
    max_output_tokens: TokenLimit | None = None  # default: as for a model of mesh.toml (by provider and name)
    context_tokens: TokenLimit | None = None


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
    dependencies = {"acting": Provide(operator)}

    @get("/accounts", responses=errors(400))
    async def find_accounts(
        self,
        support_service: NamedDependency[SupportService],
        acting: NamedDependency[str],
        text: Annotated[
            str,
            QueryParameter(
                name="query",
                description="part of the email, or the account id",
                max_length=MAX_QUERY_LENGTH,
                pattern=SINGLE_LINE,
            ),
        ] = "",
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[
            str | None,
            QueryParameter(
                description="next_cursor of the previous page", max_length=MAX_QUERY_LENGTH, pattern=SINGLE_LINE
            ),
        ] = None,
    ) -> AccountListOut:
        """Accounts whose email contains `query` (any case) or whose id it is, by email, with their money."""
        found = await support_service.find_accounts(text, limit, cursor)
        return AccountListOut([account_out(a.row, a.balance) for a in found.accounts], found.next_cursor, found.as_of)

    @get("/accounts/{account_id:uuid}", responses=errors(404))
    async def account(
        self, support_service: NamedDependency[SupportService], acting: NamedDependency[str], account_id: FromPath[UUID]
    ) -> AccountDetailOut:
        """One account: its money, keys, top-ups, credit movements and last activity."""
        return account_detail_out(await support_service.account(account_id))

    @post("/accounts/{account_id:uuid}/credits", status_code=201, responses=errors(400, 404, 503))
    async def grant_credits(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        account_id: FromPath[UUID],
        data: JSONBody[CreditGrantIn],
    ) -> CreditGrantOut:
        amount, position = await admin_service.grant_credits(account_id, data.amount_usd, data.reason, acting)
        return CreditGrantOut(account_id, pico_to_usd(amount), position)

    @post("/accounts/{account_id:uuid}/debits", status_code=201, responses=errors(400, 404, 503))
    async def take_back_credits(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        account_id: FromPath[UUID],
        data: JSONBody[CreditGrantIn],
    ) -> CreditGrantOut:
        """Take credits back (a grant made by mistake): at most what the account has neither spent nor reserved
        for requests running now (400 otherwise, naming that amount)."""
        amount, position = await admin_service.take_back_credits(account_id, data.amount_usd, data.reason, acting)
        return CreditGrantOut(account_id, pico_to_usd(amount), position)

    @post("/accounts/{account_id:uuid}/suspend", status_code=200, responses=errors(400, 404, 503))
    async def suspend(
        self,
        admin_service: NamedDependency[AdminService],
        support_service: NamedDependency[SupportService],
        acting: NamedDependency[str],
        account_id: FromPath[UUID],
        data: JSONBody[ReasonIn],
    ) -> AccountOut:
        """Its keys get 402 `account_suspended`, it cannot log in nor make keys; nothing is deleted."""
        await admin_service.suspend(account_id, data.reason, acting)
        d = await support_service.account(account_id)
        return account_out(d.row, d.balance)

    @post("/accounts/{account_id:uuid}/resume", status_code=200, responses=errors(400, 404, 503))
    async def resume(
        self,
        admin_service: NamedDependency[AdminService],
        support_service: NamedDependency[SupportService],
        acting: NamedDependency[str],
        account_id: FromPath[UUID],
        data: JSONBody[ReasonIn],
    ) -> AccountOut:
        await admin_service.resume(account_id, data.reason, acting)
        d = await support_service.account(account_id)
        return account_out(d.row, d.balance)

    @get("/topups", responses=errors(400))
    async def topups(
        self,
        support_service: NamedDependency[SupportService],
        acting: NamedDependency[str],
        status: Annotated[
            TopUpStatus, QueryParameter(description="refunded, disputed: any with a refund, a dispute")
        ] = ("pending"),
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 100,
    ) -> TopUpListOut:
        """Every account's top-ups in a status, newest first: pending bank transfers with their references."""
        rows = await support_service.topups(status, limit)
        return TopUpListOut(
            [
                AccountTopUpOut(**msgspec.structs.asdict(topup_item(r.topup)), account_id=r.account_id, email=r.email)
                for r in rows
            ]
        )

    @post("/topups/{reference:str}/reject", status_code=200, responses=errors(400, 404, 409, 503))
    async def reject_transfer(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        reference: FromPath[str],
        data: JSONBody[ReasonIn],
    ) -> TransferOut:
        """The money of a pending bank transfer will not come: it can no longer be confirmed (409 unless pending)."""
        result = await admin_service.reject_transfer(reference, data.reason, acting)
        topup = result.topup
        return TransferOut(topup.id, topup.account_id, topup.status, "0.000000", pico_to_usd(topup.received))

    @get("/audit", responses=errors(400))
    async def audit(
        self,
        operator_service: NamedDependency[OperatorService],
        acting: NamedDependency[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_PAGE)] = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="next_cursor of the previous page", pattern=AUDIT_CURSOR)
        ] = None,
        account_id: Annotated[UUID | None, QueryParameter(description="only the actions on this account")] = None,
    ) -> AuditOut:
        """What operators did (credits, suspensions, transfers, prices, switches, roles), newest first, and who."""
        rows, more = await operator_service.audit(limit, cursor, account_id)
        return AuditOut([OperatorActionOut(*msgspec.structs.astuple(r)) for r in rows], more)

    @post("/topups/{reference:str}/confirm", status_code=200, responses=errors(400, 404, 409, 503))
    async def confirm_transfer(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        reference: FromPath[str],
        data: JSONBody[TransferIn | None] = None,
    ) -> TransferOut:
        """The money of a bank-transfer top-up arrived: credit it (once; a second confirm changes nothing)."""
        result = await admin_service.confirm_transfer(reference, data.amount_usd if data else None, acting)
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
        acting: NamedDependency[str],
        data: JSONBody[InviteIn | None] = None,
    ) -> InviteOut:
        """A single-use invite code for sign-up (MESH_SIGNUP=invite); the code is in this answer only."""
        expires_at = (data or InviteIn()).expires_at
        invite, code = await admin_service.create_invite(expires_at, acting)
        return InviteOut(invite.id, code[:VISIBLE_PREFIX_LENGTH], invite.created_on, expires_at, "operator", code=code)

    @get("/invites")
    async def invites(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_INVITES_LISTED)] = 100,
    ) -> InviteListOut:
        """The newest invites, used or not (never their codes)."""
        rows = await admin_service.invites(limit)
        return InviteListOut(
            [InviteOut(r.invite_id, r.prefix, r.created_at, r.expires_at, r.by, r.used_by, r.used_at) for r in rows]
        )

    @get("/models")
    async def models(self, admin_service: NamedDependency[AdminService], acting: NamedDependency[str]) -> ModelListOut:
        return ModelListOut([model_out(m) for m in admin_service.models()])

    @get("/providers/{name:str}/models", responses=errors(400, 404, 502))
    async def provider_models(
        self,
        provider_model_service: NamedDependency[ProviderModelService],
        acting: NamedDependency[str],
        name: FromPath[str],
    ) -> Offer:
        """What the provider offers (its own model list, through Mesh's credentials for it), each marked with the
        Mesh ids the catalog serves it under and its published token limits; at most MAX_MODELS models."""
        return await provider_model_service.offered(name)

    @post("/models", status_code=201, responses=errors(400, 409, 503))
    async def add_model(
        self, admin_service: NamedDependency[AdminService], acting: NamedDependency[str], data: JSONBody[ModelAddIn]
    ) -> ModelOut:
        """Serve a model of a mesh.toml provider (one `GET /admin/providers/{name}/models` lists, say) under a new
        id at a price: every gateway process serves it from now on, and after a restart. Switch it off with
        `PUT /admin/models/{id}`."""
        prices = {name: getattr(data, name) for name in PRICE_FIELDS}
        return model_out(
            await admin_service.add_model(
                data.id, data.provider, data.upstream, prices, data.max_output_tokens, data.context_tokens, acting
            )
        )

    @put("/models/{model_id:path}", responses=errors(400, 404, 503))
    async def change_model(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        model_id: FromPath[str],
        data: JSONBody[ModelChangeIn],
    ) -> ModelOut:
        """Change a model's price and/or switch it on or off; requests that start afterwards see it."""
        given = {name: getattr(data, name) for name in PRICE_FIELDS if getattr(data, name) is not None}
        return model_out(await admin_service.change_model(model_id.lstrip("/"), given, data.enabled, acting))
