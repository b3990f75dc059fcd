"""The periodic jobs of the process that runs the projections: the lease reaper and the expiry of bank transfers
past their deadline, each run every few seconds until the process stops."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Awaitable, Callable

import psycopg
from eventsourcing.persistence import OperationalError
from psycopg_pool import AsyncConnectionPool

from commands.leasing import BudgetCommands
from commands.topups import TopUpCommands
from gateway.pause import stopped_within
from projections import billing

log = logging.getLogger("mesh")

REAP_GRACE = 30.0  # seconds past its expiry (at most half a lease's life) before the reaper settles a lease
REAP_EVERY = 5.0  # seconds between the reaper's looks (at most a quarter of a lease's life)
TOPUP_EXPIRY_EVERY = 30.0  # seconds between two looks for bank transfers past their deadline


class Upkeep:
    """The jobs, each a task (`start`) that ends when `stop` is set."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        budget: BudgetCommands,
        topups: TopUpCommands,
        lease_ttl: timedelta,
        stop: asyncio.Event,
    ):
        self.pool, self.budget, self.topups, self.stop = pool, budget, topups, stop
        life = lease_ttl.total_seconds()  # leases that live shorter are reaped sooner
        self.reap_grace, self.reap_every = min(REAP_GRACE, life / 2), min(REAP_EVERY, life / 4)

    def start(self) -> list[asyncio.Task]:
        return [
            asyncio.create_task(self._every(self.reap_every, self.reap_expired_leases), name="lease-reaper"),
            asyncio.create_task(self._every(TOPUP_EXPIRY_EVERY, self.expire_topups), name="topup-expiry"),
        ]

    async def _every(self, interval: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job` every `interval` seconds until stopped; a failure is logged and tried again."""
        while not await stopped_within(self.stop, interval):
            try:
                await job()
            except (psycopg.OperationalError, OperationalError) as exc:  # a server away (restarting): one line
                log.warning(
                    "%s: %s unreachable (%s); will retry",
                    job.__name__,
                    "PostgreSQL" if isinstance(exc, psycopg.OperationalError) else "NATS",
                    type(exc).__name__,
                )
            except Exception:
                log.exception("%s failed; will retry", job.__name__)

    async def reap_expired_leases(self) -> None:
        """Settle leases whose holder vanished (a crashed gateway), with what their usage events paid. A live
        holder renews a lease while requests run on it, so only a vanished one lets it expire."""
        async with self.pool.connection() as conn:
            expired = await billing.expired_leases(conn, self.reap_grace)
        for lease_id, account_id, key_id, spent in expired:
            await asyncio.to_thread(self.budget.settle, account_id, key_id, lease_id, spent)

    async def expire_topups(self) -> None:
        """Pending bank-transfer top-ups past their deadline expire (they can no longer be confirmed)."""
        async with self.pool.connection() as conn:
            due = await billing.due_to_expire(conn)
        for provider, reference in due:
            await asyncio.to_thread(self.topups.expire, provider, reference)
