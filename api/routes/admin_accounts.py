"""Operator routes on accounts (finding them, their credits, their suspension) and on the invites that admit them.

Every operator route takes the operator token, or the management token of an account with the operator role (`mesh
operators add`); each action records which operator made it (api/routes/admin_audit.py lists them)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, QueryParameter

from api.auth import OperatorController
from api.openapi import errors
from api.routes.keys import KeyOut, key_out
from api.routes.topups import TopUpListItem, topup_item
from api.services.admin import AdminService
from api.services.as_of import AsOf
from api.services.support import MAX_QUERY_LENGTH, AccountDetail, SupportService
from domain.bounds import SINGLE_LINE, AmountIn, AwareDatetime, Reason
from domain.credentials import VISIBLE_PREFIX_LENGTH
from domain.money import pico_to_usd
from projections import billing, directory

MAX_PAGE = 100  # the most rows one page of an operator's listing holds


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


class AdminAccountController(OperatorController):
    """Accounts, their credits and suspension; invites."""

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
        return await _account(support_service, account_id)

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
        return await _account(support_service, account_id)

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


async def _account(support_service: SupportService, account_id: UUID) -> AccountOut:
    """The account as an operator's list shows it, read now."""
    d = await support_service.account(account_id)
    return account_out(d.row, d.balance)
