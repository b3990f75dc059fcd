"""Admission from budget leases, in memory (see domain/leases.py for why the limits hold).

Each gateway process holds at most one current lease per key. A request
reserves its worst-case cost from it; when it ends, the reservation is swapped
for the real cost. A lease that cannot fit a request is retired (settled once
its requests finish) and a new one is taken. Idle leases are settled after a
second so other processes can use the budget; expiry covers a crashed process.
A lease with requests still running is renewed (its expiry pushed back) well
before it expires, so a request that outlives a lease's life (a long stream)
is never settled by the reaper without its cost.

When no new lease covers a request, the free parts of the process's own open
leases for the key (the current one and retired ones whose requests still run)
are merged: the request is admitted against several leases at once, each part
a reservation on its lease, so every lease still spends at most what it holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID


from domain.leases import BudgetExceeded, LeaseGrant
from gateway.admission import KeyInfo
from gateway.errors import GatewayError
from gateway.leases import KeyLeases, Lease, Ticket, seconds_until
from gateway.pause import stopped_within

log = logging.getLogger("mesh.gateway")

LEASE_TTL = timedelta(minutes=15)
IDLE_RETURN = 1.0  # seconds without requests before an idle lease is settled


class LeaseUnavailable(Exception):
    """The lease could not be taken just now (say, other writers kept winning); worth retrying."""


class LeaseBroker(Protocol):
    async def acquire(self, account_id: UUID, key_id: UUID, wanted: int, minimum: int) -> LeaseGrant:
        """Raises BudgetExceeded when a limit refuses even `minimum`, LeaseUnavailable for a passing failure."""

    async def settle(self, account_id: UUID, key_id: UUID, lease_id: UUID, spent: int) -> None: ...

    async def extend(self, account_id: UUID, key_id: UUID, lease_id: UUID) -> datetime | None:
        """A later expiry for the lease (a full life from now); None when it is no longer open."""


class BudgetRefusal(GatewayError):
    """402: the limits do not cover the reservation. `available` is what they still allow (pico-USD, with what
    this process's own leases hold unreserved), None when the refusal is not about money (say, a revoked key)."""

    def __init__(self, message: str, code: str, available: int | None):
        super().__init__(402, message, "insufficient_quota", code)
        self.available = available


def busy() -> GatewayError:
    """429: the budget would cover the request, but not in time (it is tied up by requests in flight)."""
    return GatewayError(
        429,
        "could not reserve budget for this API key in time (too many requests in flight or "
        "too much contention); retry shortly",
        "rate_limit_error",
        "budget_busy",
    )


def _refusal(refused: BudgetExceeded, state: "KeyLeases") -> BudgetRefusal:
    if refused.available is None:
        return BudgetRefusal(refused.message, refused.code, None)
    own = sum(lease.free for lease in state.mergeable(time.monotonic()))
    return BudgetRefusal(refused.message, refused.code, refused.available + own)


class Budgets:
    def __init__(self, broker: LeaseBroker, lease_multiple: int = 32, patience: float = 3.0):
        self.broker = broker
        self.lease_multiple = lease_multiple  # a new lease aims to cover this many worst-case requests
        self.patience = patience  # how long a request may wait for reservations of its own process to return
        self._keys: dict[UUID, KeyLeases] = {}
        self._unsettled: list[Lease] = []
        self.leases_taken = 0  # leases the limits granted this process (/metrics)
        self.leases_refused = 0  # lease requests the limits refused

    async def reserve(self, key: KeyInfo, minimum: int, wanted: int) -> Ticket:
        """Reserve `wanted` (a request's worst-case cost) or, when the budget is nearly used up, as little as
        `minimum` (a caller that passes less than `wanted` fits the request to what it got).

        The current lease serves while it can cover `wanted`; otherwise this key's idle leases are given back and
        a new lease is taken, so it is sized from all that is left. When the limits refuse that, the free parts of
        this process's own open leases are merged, with a new lease for what they lack. Only when all of that
        cannot cover `minimum` does a request wait for budget tied up in leases to come back (up to `patience`)
        or get a 402 (a BudgetRefusal saying what the limits and this process's leases still allow).
        """
        state = self._keys.get(key.key_id)
        if state is None:
            state = self._keys[key.key_id] = KeyLeases(self.lease_multiple)
        deadline = time.monotonic() + self.patience
        known: BudgetExceeded | None = None  # the limits' last refusal, kept through later passing failures
        while True:
            ticket = self._take(state.current, wanted, wanted)
            if ticket is not None:
                return ticket
            async with state.lock:
                ticket = self._take(state.current, wanted, wanted)  # another request may have refilled it
                if ticket is not None:
                    return ticket
                state.adapt(self.lease_multiple, time.monotonic())
                await self._give_back_idle(state, key.key_id)
                refused = await self._lease(state, key, minimum, wanted)
                if refused is not None and refused.available is not None:
                    # the budget is scarce: a new lease for what the own leases' free parts lack, if the limits allow
                    lacking = minimum - sum(lease.free for lease in state.mergeable(time.monotonic()))
                    if 0 < lacking <= refused.available:  # a passing failure leaves the first refusal standing
                        refused = await self._lease(state, key, lacking, wanted) or refused
                ticket = self._take(state.current, wanted, wanted) or self._merge(state, minimum, wanted)
                if ticket is not None:
                    return ticket
            if refused is not None and not state.inflight and not refused.held_by_leases:
                raise _refusal(refused, state)
            known = refused or known
            # else wait: our own requests, or other holders' leases, give back what they do not spend. Out of
            # time, the answer is the limits' refusal if they gave one: a lease lost to another gateway's write
            # (a passing failure) on the last try says nothing about the budget, and is no reason for a 429.
            await self._wait(state, deadline, known)

    async def _lease(self, state: KeyLeases, key: KeyInfo, minimum: int, wanted: int) -> BudgetExceeded | None:
        """Take a new current lease of at least `minimum` (sized for many requests of `wanted`); the refusal if the
        limits refuse it. A passing failure takes nothing and refuses nothing. Called under the key's lock."""
        try:
            grant = await self.broker.acquire(
                key.account_id, key.key_id, minimum=minimum, wanted=wanted * max(state.multiple, 4 * state.inflight)
            )
        except BudgetExceeded as exc:
            self.leases_refused += 1
            return exc
        except LeaseUnavailable:
            return None
        self.leases_taken += 1
        self._retire(state)
        state.current = Lease(grant, key.account_id, key.key_id)
        return None

    async def _give_back_idle(self, state: KeyLeases, key_id: UUID) -> None:
        """Settle this key's leases no request uses (the current one and any waiting for the sweep) before a new
        lease is asked for: what they hold unspent counts as available again, so this process's own leftovers
        never make a request that the remaining budget covers wait, shrink or fail. Called under the key's lock."""
        idle = [lease for lease in self._unsettled if lease.key_id == key_id]
        if state.current is not None and not state.current.inflight:
            idle.append(state.current)
            state.current = None
        if not idle:
            return
        self._unsettled = [lease for lease in self._unsettled if lease.key_id != key_id]
        for lease in idle:
            await self._settle_one(lease)

    async def _wait(self, state: KeyLeases, deadline: float, refused: BudgetExceeded | None) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if refused is None:
                raise busy()
            raise _refusal(refused, state)
        try:
            await asyncio.wait_for(state.changed.wait(), min(remaining, 0.25))
        except asyncio.TimeoutError:
            pass

    @staticmethod
    def _take(lease: Lease | None, minimum: int, wanted: int) -> Ticket | None:
        if lease is None or lease.free < minimum or not lease.usable(time.monotonic()):
            return None
        amount = min(wanted, lease.free)
        lease.reserved += amount
        lease.inflight += 1
        return Ticket(lease, amount)

    @staticmethod
    def _merge(state: KeyLeases, minimum: int, wanted: int) -> Ticket | None:
        """Up to `wanted` (at least `minimum`) from the free parts of the key's open leases, retired ones first."""
        leases = state.mergeable(time.monotonic())
        if sum(lease.free for lease in leases) < minimum:
            return None
        parts: list[tuple[Lease, int]] = []
        left = wanted
        for lease in leases:
            amount = min(left, lease.free)
            lease.reserved += amount
            lease.inflight += 1
            parts.append((lease, amount))
            left -= amount
            if not left:
                break
        if len(parts) == 1:
            return Ticket(parts[0][0], parts[0][1])
        return Ticket(parts[0][0], wanted - left, tuple(parts))

    def release(self, ticket: Ticket, cost: int) -> None:
        """The request is over: its reservation becomes its real cost. A merged reservation's cost fills its parts
        in order, each up to what it reserved (what exceeds the whole reservation lands on the last part)."""
        lease = ticket.lease
        if lease is None:
            return
        if cost > ticket.amount:
            log.warning("request cost %d exceeded its reservation %d on lease %s", cost, ticket.amount, lease.id)
        state = self._keys[lease.key_id]
        if ticket.parts is None:
            self._end(state, lease, ticket.amount, cost)
        else:
            last = len(ticket.parts) - 1
            for i, (lease, amount) in enumerate(ticket.parts):
                share = cost if i == last else min(cost, amount)
                self._end(state, lease, amount, share)
                cost -= share
        state.notify()

    def _end(self, state: KeyLeases, lease: Lease, reserved: int, cost: int) -> None:
        """One reservation on `lease` ends costing `cost`; a retired lease is settled when its last one ends."""
        lease.reserved -= reserved
        lease.spent += cost
        lease.inflight -= 1
        lease.last_used = time.monotonic()
        if lease.inflight == 0 and lease in state.retired:
            state.retired.remove(lease)
            asyncio.get_running_loop().create_task(self._settle([lease]))

    @property
    def open_leases(self) -> int:
        """Leases this process holds and has not settled yet."""
        held = sum((state.current is not None) + len(state.retired) for state in self._keys.values())
        return held + len(self._unsettled)

    def _retire(self, state: KeyLeases) -> None:
        if state.current is not None:
            if state.current.inflight:
                state.retired.append(state.current)
            else:
                self._unsettled.append(state.current)
            state.current = None

    async def _settle(self, leases: list[Lease]) -> None:
        for lease in leases:
            state = self._keys[lease.key_id]
            async with state.lock:  # one lease operation per key at a time in this process
                await self._settle_one(lease)
            state.notify()

    async def _settle_one(self, lease: Lease) -> None:
        """Settle a lease with what it spent; one that fails waits in `_unsettled` for the next sweep."""
        try:
            await self.broker.settle(lease.account_id, lease.key_id, lease.id, lease.spent)
        except Exception as exc:
            log.warning("settling lease %s failed (%s); will retry", lease.id, exc)
            self._unsettled.append(lease)

    async def sweep(self, everything: bool = False) -> None:
        """Settle idle leases (all unused ones when `everything`) and settlements that failed before."""
        now = time.monotonic()
        for state in list(self._keys.values()):
            lease = state.current
            if (
                lease is not None
                and lease.inflight == 0
                and (everything or now - lease.last_used > IDLE_RETURN or not lease.usable(now))
            ):
                self._retire(state)
        await self._renew(now)
        pending, self._unsettled = self._unsettled, []
        await self._settle(pending)

    async def _renew(self, now: float) -> None:
        """Push back the expiry of leases whose requests still run, long before it comes."""
        for state in list(self._keys.values()):
            for lease in [*state.retired, *([state.current] if state.current is not None else [])]:
                if not lease.due_for_renewal(now):
                    continue
                try:
                    async with state.lock:  # one lease operation per key at a time in this process
                        expires_at = await self.broker.extend(lease.account_id, lease.key_id, lease.id)
                except Exception as exc:
                    log.warning("renewing lease %s failed (%s); will retry", lease.id, exc)
                    continue
                if expires_at is not None:
                    lease.deadline = time.monotonic() + seconds_until(expires_at)
                    continue
                # Settled under its requests (this process stalled past expiry and grace): admit nothing more on it;
                # what its requests cost is still billed by their usage events.
                log.warning("lease %s was settled while %d requests still ran on it", lease.id, lease.inflight)
                if state.current is lease:
                    self._retire(state)
                lease.closed = True  # no request is merged onto it either
                lease.deadline = math.inf  # retired: only its requests' end matters now

    async def run(self, stop: asyncio.Event, interval: float = 0.25) -> None:
        while True:
            stopped = await stopped_within(stop, interval)
            await self.sweep()  # once more when stopped
            if stopped:
                return

    def forget_key(self, key_id: UUID) -> None:
        """A revoked or disabled key: admit nothing more on its lease; settle it when its requests end."""
        state = self._keys.get(key_id)
        if state is not None:
            self._retire(state)
            for lease in state.retired:
                lease.closed = True
