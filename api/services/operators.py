"""Who the operators are: the shared operator token, or an account given the role (`mesh operators add`); and
the record of what they did (the audit)."""

from __future__ import annotations

import hmac
import re
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from api.services.errors import Forbidden, Invalid
from domain.credentials import hash_token
from projections import directory

TOKEN_OPERATOR = "token"  # what the events say of an act made with the shared operator token
AUDIT_CURSOR = r"^[0-9]{1,18}$"  # a stream position
AUDIT_CURSOR_RULE = "a cursor is the next_cursor of the previous page (digits)"


def audit_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not re.match(AUDIT_CURSOR, cursor):
        raise Invalid(AUDIT_CURSOR_RULE, "invalid_request", param="cursor")
    return int(cursor)


class OperatorService:
    def __init__(self, pool: AsyncConnectionPool, operator_token: str):
        self.pool = pool
        self.operator_token = operator_token  # the shared one: automation and bootstrap

    async def acting(self, token: str) -> str:
        """Who acts with this bearer token: "token" for the operator token, the account id for the management
        token of an operator's account: Forbidden for anything else."""
        if hmac.compare_digest(token.encode(), self.operator_token.encode()):
            return TOKEN_OPERATOR
        async with self.pool.connection() as conn:
            account_id = await directory.account_for_token(conn, hash_token(token))
            if account_id is not None and await directory.is_operator(conn, account_id):
                return str(account_id)
        raise Forbidden(
            "this route needs the operator token or the management token of an operator's account", "forbidden"
        )

    async def check(self, account_id: UUID) -> str:
        """The acting operator for a signed-in account: its id, or Forbidden when it is not an operator."""
        async with self.pool.connection() as conn:
            if await directory.is_operator(conn, account_id):
                return str(account_id)
        raise Forbidden(
            "this page is for the operators of this Mesh; `mesh operators add <email>` makes one", "forbidden"
        )

    async def is_operator(self, account_id: UUID) -> bool:
        async with self.pool.connection() as conn:
            return await directory.is_operator(conn, account_id)

    async def audit(
        self, limit: int, cursor: str | None = None, account_id: UUID | None = None
    ) -> tuple[list[directory.OperatorAction], str | None]:
        """Operators' actions, newest first, and the cursor of the next (older) page, if there is one."""
        rows = await self._actions(limit + 1, audit_cursor(cursor), account_id)
        more = len(rows) > limit
        return rows[:limit], (str(rows[limit - 1].position) if more else None)

    async def _actions(self, limit: int, before: int | None, account_id: UUID | None) -> list[directory.OperatorAction]:
        async with self.pool.connection() as conn:
            return await directory.operator_actions(conn, limit, before, account_id)
