"""What the operators look up: accounts by email or id with their money, keys, top-ups and last activity; one
request by trace id across accounts; every account's top-ups by status."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.read_models import BILLING, DIRECTORY
from api.services.as_of import AsOf, read_as_of
from api.services.errors import Invalid, Missing
from api.services.logs import LogEntry, LogService
from domain.bounds import check_text
from projections import billing, directory

MAX_QUERY_LENGTH = 320  # characters of an account search (an email is at most 254)
MAX_TOPUPS_LISTED = 200
MAX_CREDITS_SHOWN = 50  # credit movements on an account's page


class AccountSummary(msgspec.Struct):
    row: directory.AccountRow
    balance: billing.Balance


class AccountsFound(msgspec.Struct):
    accounts: list[AccountSummary]
    next_cursor: str | None  # the email after which the next page starts
    as_of: AsOf


class AccountDetail(msgspec.Struct):
    row: directory.AccountRow
    balance: billing.Balance
    keys: list[directory.KeyRow]
    key_stats: dict[UUID, billing.KeyStats]
    topups: list[billing.TopUpRow]
    credits: list[billing.CreditRow]
    last_activity: datetime | None  # the newest request of any of its keys
    as_of: AsOf


class TraceLookup(msgspec.Struct):
    entry: LogEntry
    account: directory.AccountRow | None


class SupportService:
    def __init__(self, pool: AsyncConnectionPool, log_service: LogService):
        self.pool = pool
        self.log_service = log_service  # one request by trace id, as the account's own log page reads it

    async def find_accounts(self, query: str, limit: int, cursor: str | None = None) -> AccountsFound:
        """Accounts whose email contains `query` or whose id it is, by email; a page of `limit` after `cursor`."""
        for value, name in ((query, "query"), (cursor or "", "cursor")):
            try:
                check_text(value, name, MAX_QUERY_LENGTH)
            except ValueError as exc:
                raise Invalid(str(exc), "invalid_request", param=name) from None
        async with self.pool.connection() as conn:
            rows = await directory.find_accounts(conn, query, limit + 1, cursor)
            balances = await billing.balances_of(conn, [r.account_id for r in rows])
            as_of = await read_as_of(conn, DIRECTORY)
        more = len(rows) > limit
        rows = rows[:limit]
        found = [AccountSummary(r, balances.get(r.account_id, billing.Balance(0, 0))) for r in rows]
        return AccountsFound(found, rows[-1].email if more else None, as_of)

    async def account(self, account_id: UUID) -> AccountDetail:
        async with self.pool.connection() as conn:
            row = await directory.account_row(conn, account_id)
            if row is None:
                raise Missing(f"no account {account_id}", "not_found")
            stats = await billing.key_stats(conn, account_id)
            detail = AccountDetail(
                row,
                await billing.balance_of(conn, account_id),
                await directory.keys_of(conn, account_id),
                stats,
                await billing.topups_of(conn, account_id),
                await billing.credit_history(conn, account_id, MAX_CREDITS_SHOWN),
                max((s.last_used for s in stats.values() if s.last_used is not None), default=None),
                await read_as_of(conn, BILLING),
            )
        return detail

    async def trace(self, trace_id: UUID) -> TraceLookup:
        """One request of any account, by the trace id its caller was given."""
        found = await self.log_service.entry(None, trace_id)
        if found is None:
            raise Missing(f"no request {trace_id} in the logs (of any account)", "not_found")
        async with self.pool.connection() as conn:
            account = await directory.account_row(conn, found.row.account_id)
        return TraceLookup(found, account)

    async def topups(self, status: str, limit: int) -> list[billing.AccountTopUp]:
        if status not in billing.TOPUP_STATUSES:
            raise Invalid(
                f"status is one of {', '.join(billing.TOPUP_STATUSES)}; got {status[:40]!r}",
                "invalid_request",
                param="status",
            )
        async with self.pool.connection() as conn:
            return await billing.topups_by_status(conn, status, min(limit, MAX_TOPUPS_LISTED))
