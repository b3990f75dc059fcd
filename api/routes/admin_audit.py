"""The operators' audit trail: what operators did and who (the operator token, or an operator's management token:
api/routes/admin_accounts.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from api.auth import OperatorController
from api.openapi import errors
from api.routes.admin_accounts import MAX_PAGE
from api.services.operators import AUDIT_CURSOR, OperatorService


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


class AdminAuditController(OperatorController):
    """What operators did, newest first."""

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
