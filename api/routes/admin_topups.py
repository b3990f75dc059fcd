"""Operator routes on top-ups: every account's, by status, and the pending bank transfers an operator confirms or
rejects (the operator token, or an operator's management token: api/routes/admin_accounts.py)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from api.auth import OperatorController
from api.openapi import errors
from api.routes.admin_accounts import MAX_PAGE, ReasonIn
from api.routes.topups import TopUpListItem, topup_item
from api.services.admin import AdminService
from api.services.support import SupportService
from domain.bounds import AmountIn
from domain.money import pico_to_usd
from projections import billing

TopUpStatus = Literal[tuple(billing.TOPUP_STATUSES)]  # type: ignore[valid-type]


class AccountTopUpOut(TopUpListItem, kw_only=True):
    account_id: UUID
    email: str | None


class TopUpListOut(msgspec.Struct):
    data: list[AccountTopUpOut]  # newest first


class TransferIn(msgspec.Struct, forbid_unknown_fields=True):
    amount_usd: AmountIn | None = None  # what arrived; default: the amount asked for


class TransferOut(msgspec.Struct):
    id: UUID
    account_id: UUID
    status: str
    credited_usd: str  # by this call: 0 when it was already confirmed
    received_usd: str


class AdminTopUpController(OperatorController):
    """Top-ups by status; bank transfers confirmed or rejected."""

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
