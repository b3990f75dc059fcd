"""The gateway's lease broker in one Mesh process: the budget use cases (commands/leasing.py), run off the event
loop, as gateway/lease_admission.py asks for them."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID

from eventsourcing.persistence import OperationalError

from commands.app import Conflict
from commands.leasing import BudgetCommands
from gateway.lease_admission import LEASE_TTL, LeaseGrant, LeaseUnavailable


class CommandLeases:
    """The gateway's lease broker: the budget use cases, run off the event loop."""

    def __init__(self, budget: BudgetCommands, ttl: timedelta = LEASE_TTL):
        self.budget = budget
        self.ttl = ttl

    async def acquire(self, account_id: UUID, key_id: UUID, wanted: int, minimum: int) -> LeaseGrant:
        try:
            return await asyncio.to_thread(self.budget.lease, account_id, key_id, wanted, minimum, self.ttl)
        except (Conflict, OperationalError) as exc:
            raise LeaseUnavailable(str(exc)) from None

    async def settle(self, account_id: UUID, key_id: UUID, lease_id: UUID, spent: int) -> None:
        await asyncio.to_thread(self.budget.settle, account_id, key_id, lease_id, spent)

    async def extend(self, account_id: UUID, key_id: UUID, lease_id: UUID) -> datetime | None:
        return await asyncio.to_thread(self.budget.extend, account_id, key_id, lease_id, self.ttl)
