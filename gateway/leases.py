"""What one gateway process holds of a key's budget: its leases (each a share of the key's and its account's
limits, granted by the commands: domain/leases.py), a request's reservation on them (`Ticket`), and the sizing of
the next lease (`KeyLeases`). gateway/lease_admission.py admits requests on them."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import datetime
from uuid import UUID

from domain.leases import LeaseGrant

EXPIRY_MARGIN = 120.0  # seconds: stop admitting on a lease this long (at most a quarter of its life) before expiry
RENEW_WHEN_LEFT = 1 / 2  # renew a lease with requests running once less than this share of its life is left
LEASE_AIM = (2.0, 10.0)  # seconds a lease should last under steady traffic
MAX_MULTIPLE = 1 << 16


def seconds_until(expires_at: datetime) -> float:
    return (expires_at - datetime.now(expires_at.tzinfo)).total_seconds()


class Lease:
    __slots__ = (
        "id",
        "account_id",
        "key_id",
        "amount",
        "reserved",
        "spent",
        "inflight",
        "deadline",
        "last_used",
        "taken_at",
        "life",
        "closed",
    )

    def __init__(self, grant: LeaseGrant, account_id: UUID, key_id: UUID):
        self.id = grant.lease_id
        self.account_id, self.key_id = account_id, key_id
        self.amount = grant.amount
        self.reserved = 0
        self.spent = 0
        self.inflight = 0
        self.life = max(seconds_until(grant.expires_at), 0.0)  # seconds it was granted for
        self.deadline = time.monotonic() + self.life
        self.last_used = self.taken_at = time.monotonic()
        self.closed = False  # admits nothing more (settled under its requests, or its key forgotten)

    @property
    def free(self) -> int:
        return self.amount - self.spent - self.reserved

    def usable(self, now: float) -> bool:
        return now < self.deadline - min(EXPIRY_MARGIN, self.life / 4)

    def due_for_renewal(self, now: float) -> bool:
        return self.inflight > 0 and self.deadline - now < self.life * RENEW_WHEN_LEFT


class Ticket:
    """One admitted request's reservation: `amount` on `lease`, or, merged from several leases, the parts
    ((lease, amount) each, retired leases first) summing to `amount`, `lease` being the first part's."""

    __slots__ = ("lease", "amount", "parts")

    def __init__(self, lease: Lease | None, amount: int, parts: tuple[tuple[Lease, int], ...] | None = None):
        self.lease, self.amount, self.parts = lease, amount, parts


FREE = Ticket(None, 0)


class KeyLeases:
    """What this process holds of one key's budget: its current lease, the retired ones whose requests still run,
    and how large the next lease should be."""

    __slots__ = ("current", "retired", "lock", "changed", "multiple")

    def __init__(self, multiple: int) -> None:
        self.multiple = multiple  # how many worst-case requests the next lease aims to cover
        self.current: Lease | None = None
        self.retired: list[Lease] = []
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()  # set (and replaced) whenever budget comes back

    def notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    @property
    def inflight(self) -> int:
        return sum(lease.inflight for lease in self.retired) + (self.current.inflight if self.current else 0)

    def mergeable(self, now: float) -> list[Lease]:
        """The open leases a request may still be admitted on, retired ones first: their free parts are what this
        process holds of the key's budget unreserved."""
        leases = [lease for lease in self.retired if not lease.closed and lease.free > 0 and lease.usable(now)]
        if self.current is not None and self.current.free > 0 and self.current.usable(now):
            leases.append(self.current)
        return leases

    def adapt(self, floor: int, now: float) -> None:
        """Size the next lease by how fast the last one went: a busy key leases for seconds of traffic at a
        time (a lease is two events and a round trip), a quiet one for a few requests. A key whose traffic
        jumps gets a lease sized from its new rate at once: doubling from a few requests took a busy key through
        a dozen leases in its first seconds, each an atomic JetStream batch that holds up the usage events
        stored after it. The domain still caps every lease at half of what the limits leave, so a large
        multiple never holds much of a small budget."""
        lease = self.current
        if lease is None:
            return
        lasted = now - lease.taken_at
        if lasted < LEASE_AIM[0]:  # at the rate it went, for the aim's lower end (at least twice as many)
            grow = max(2.0, LEASE_AIM[0] / max(lasted, LEASE_AIM[0] / MAX_MULTIPLE))
            self.multiple = min(math.ceil(self.multiple * grow), MAX_MULTIPLE)
        elif lasted > LEASE_AIM[1]:
            self.multiple = max(self.multiple // 2, floor)
