"""What must hold of the event log itself, checked over its decoded events alone (`mesh audit verify`).

Fed every event in stream order (`observe`), then asked for what does not hold (`violations`):

- spend: an account's spend as its leases account for it (what its settled leases spent, plus the usage paid by
  its leases still open) is what its usage events cost, each trace id counted once; so its balance, credits
  (grants less debits) less spend, is the same however it is summed.
- price: a usage event that cost something was charged the model's price in force when the request started
  (the configured price, or the one its `model.added` gave it, then each `model.price_changed` from its time on;
  one changed up to PRICE_SPREAD before is accepted too, as a gateway hears of a change a moment later), and its
  cost is that price times its tokens.
- leases: a lease spends at most its amount; none is settled or extended without being granted; and none is still
  open LEASE_REAP_GRACE past its expiry (the reaper settles those).
- trace ids: one trace id is billed once (copies of one usage event, same time and cost, are counted once by
  the read models and are not a violation; another time or cost under the same trace id is).
- caps: a capped key's usage in one cap period (`cap_reset`; all time without one) adds up to at most the cap in
  force at each request's start.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, Callable
from uuid import UUID

import msgspec

from domain.account import Account
from domain.apikey import ApiKey
from domain.catalog import ModelSettings
from domain.leases import period_start
from domain.pricing import Price
from domain.usage import UsageRecorded

PRICE_SPREAD = timedelta(seconds=60)  # how late a gateway may still charge the price a change replaced
LEASE_REAP_GRACE = timedelta(minutes=2)  # past its expiry, a lease the reaper has not settled is a violation


class Violation(msgspec.Struct, frozen=True):
    invariant: str  # spend | price | lease | trace | cap
    account_id: UUID | None
    subject: str  # what it is about: "account <id>", "usage <trace id>", "lease <id>", "key <id>"
    detail: str
    position: int | None = None  # the event that shows it, where one does

    def line(self) -> str:
        at = f" (position {self.position})" if self.position is not None else ""
        return f"{self.invariant}: {self.subject}{at}: {self.detail}"


class _Lease(msgspec.Struct):
    account_id: UUID
    amount: int
    expires_at: datetime
    settled: int | None = None  # what it spent, once settled


class _Cap(msgspec.Struct, frozen=True):
    since: datetime
    cap: int | None
    reset: str | None


class LogInvariants:
    """The checks over one pass of the log: `observe` each event in order, then `violations(now)`."""

    def __init__(self, prices: dict[str, Price]):
        self.prices: dict[str, list[tuple[datetime | None, Price]]] = {m: [(None, p)] for m, p in prices.items()}
        self.traces: dict[UUID, tuple[int, datetime, int]] = {}  # trace id: the first copy's position, time, cost
        self.usage: dict[UUID, int] = defaultdict(int)  # per account: what its usage events cost
        self.lease_usage: dict[UUID, int] = defaultdict(int)  # per lease: the usage events naming it
        self.spent_in_period: dict[tuple[UUID, str | None, datetime | None], int] = defaultdict(int)
        self.found: list[Violation] = []
        self.leases: dict[tuple[str, UUID], _Lease] = {}  # ("account" | "key", lease id)
        self.settled: dict[UUID, int] = defaultdict(int)  # per account: what its settled leases spent
        self.caps: dict[UUID, list[_Cap]] = defaultdict(list)
        self.key_accounts: dict[UUID, UUID] = {}
        self._handlers: dict[type, Callable[[int, Any], None]] = {
            UsageRecorded: self._usage,
            ModelSettings.PriceChanged: self._price_changed,
            ModelSettings.Added: self._price_changed,  # the price it is served at from then on
            Account.BudgetLeased: lambda p, e: self._leased("account", e.originator_id, p, e),
            ApiKey.BudgetLeased: lambda p, e: self._leased("key", None, p, e),
            Account.LeaseSettled: lambda p, e: self._lease_settled("account", p, e),
            ApiKey.LeaseSettled: lambda p, e: self._lease_settled("key", p, e),
            Account.LeaseExtended: lambda p, e: self._lease_extended("account", p, e),
            ApiKey.LeaseExtended: lambda p, e: self._lease_extended("key", p, e),
            ApiKey.Created: self._key_created,
            ApiKey.SpendCapChanged: self._cap_changed,
        }

    def observe(self, position: int, event: Any) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(position, event)

    def _usage(self, position: int, e: UsageRecorded) -> None:
        """Checked as it comes (a price or cap change is on the log before the requests that start after it), so
        a pass keeps only a few numbers per trace id, lease, account and key period, never the events."""
        first = self.traces.get(e.trace_id)
        if first is not None:
            if first[1:] != (e.timestamp, e.cost):
                detail = (
                    f"billed twice: at position {first[0]} ({first[1].isoformat()}, cost {first[2]})"
                    f" and here ({e.timestamp.isoformat()}, cost {e.cost})"
                )
                self.found.append(Violation("trace", e.account_id, f"usage {e.trace_id}", detail, position))
            return  # a copy of one event is counted once, as the read models do
        self.traces[e.trace_id] = (position, e.timestamp, e.cost)
        self.usage[e.account_id] += e.cost
        if e.lease_id is not None:
            self.lease_usage[e.lease_id] += e.cost
        self._check_price(position, e)
        self._check_cap(position, e)

    def _price_changed(self, position: int, e: Any) -> None:
        price = Price(e.prompt_per_1k, e.completion_per_1k, e.cached_per_1k, e.cache_write_per_1k)
        self.prices.setdefault(e.model_id, []).append((e.timestamp, price))

    def _leased(self, holder: str, account_id: UUID | None, position: int, e: Any) -> None:
        owner = account_id if account_id is not None else self.key_accounts.get(e.originator_id)
        self.leases[(holder, e.lease_id)] = _Lease(owner or e.originator_id, e.amount, e.expires_at)

    def _lease_settled(self, holder: str, position: int, e: Any) -> None:
        lease = self._known(holder, position, e, "settled")
        if lease is None:
            return
        lease.settled = e.spent
        if holder == "account":
            self.settled[e.originator_id] += e.spent
        if e.spent > lease.amount:
            self.found.append(
                Violation(
                    "lease",
                    lease.account_id,
                    f"lease {e.lease_id}",
                    f"{holder} lease spent {e.spent}, more than its amount {lease.amount}",
                    position,
                )
            )

    def _lease_extended(self, holder: str, position: int, e: Any) -> None:
        lease = self._known(holder, position, e, "extended")
        if lease is not None:
            lease.expires_at = max(lease.expires_at, e.expires_at)

    def _known(self, holder: str, position: int, e: Any, what: str) -> _Lease | None:
        lease = self.leases.get((holder, e.lease_id))
        if lease is None:
            account = e.originator_id if holder == "account" else self.key_accounts.get(e.originator_id)
            self.found.append(
                Violation("lease", account, f"lease {e.lease_id}", f"{holder} lease {what} but never granted", position)
            )
        return lease

    def _key_created(self, position: int, e: Any) -> None:
        self.key_accounts[e.originator_id] = e.account_id
        self.caps[e.originator_id].append(_Cap(e.timestamp, e.spend_cap, e.cap_reset))

    def _cap_changed(self, position: int, e: Any) -> None:
        self.caps[e.originator_id].append(_Cap(e.timestamp, e.spend_cap, e.cap_reset))

    def violations(self, now: datetime) -> list[Violation]:
        """Everything that does not hold, given the log read so far and the time it was read at."""
        return [*self.found, *self._leases(now), *self._spend()]

    def _price_at(self, model: str, at: datetime) -> list[Price]:
        """The prices a request starting at `at` may have been charged (see PRICE_SPREAD)."""
        history = self.prices.get(model, [])
        allowed = []
        for i, (since, price) in enumerate(history):
            until = history[i + 1][0] if i + 1 < len(history) else None
            if (since is None or since <= at) and (until is None or until + PRICE_SPREAD > at):
                allowed.append(price)
        return allowed

    def _check_price(self, position: int, e: UsageRecorded) -> None:
        if e.cost == 0:
            return  # nothing billed (a failed request, a free model)
        charged = Price(e.prompt_per_1k, e.completion_per_1k, e.cached_per_1k, e.cache_write_per_1k)
        allowed = self._price_at(e.model, e.timestamp)
        subject = f"usage {e.trace_id}"
        if not any(_same_price(charged, p) for p in allowed):
            in_force = " or ".join(_shown(p) for p in allowed) or "none (the model is not in the catalog)"
            detail = f"{e.model} charged {_shown(charged)}; in force at {e.timestamp.isoformat()}: {in_force}"
            self.found.append(Violation("price", e.account_id, subject, detail, position))
            return
        expected = charged.cost(e.prompt_tokens, e.completion_tokens, e.cached_prompt_tokens, e.cache_write_tokens)
        if e.cost != expected:
            detail = f"cost {e.cost}, but its tokens at the prices it names cost {expected}"
            self.found.append(Violation("price", e.account_id, subject, detail, position))

    def _check_cap(self, position: int, e: UsageRecorded) -> None:
        cap = next((c for c in reversed(self.caps.get(e.key_id, [])) if c.since <= e.timestamp), None)
        if cap is None or cap.cap is None:
            return
        period = (e.key_id, cap.reset, period_start(cap.reset, e.timestamp))
        before = self.spent_in_period[period]
        after = self.spent_in_period[period] = before + e.cost
        if before <= cap.cap < after:
            since = period[2].isoformat() if period[2] else "its creation"
            detail = f"spent {after} since {since}, above its cap {cap.cap}"
            self.found.append(Violation("cap", e.account_id, f"key {e.key_id}", detail, position))

    def _leases(self, now: datetime) -> list[Violation]:
        return [
            Violation(
                "lease",
                lease.account_id,
                f"lease {lease_id}",
                f"{holder} lease still open, expired at {lease.expires_at.isoformat()}",
            )
            for (holder, lease_id), lease in self.leases.items()
            if lease.settled is None and lease.expires_at + LEASE_REAP_GRACE < now
        ]

    def _spend(self) -> list[Violation]:
        on_open_leases: dict[UUID, int] = defaultdict(int)
        for (holder, lease_id), lease in self.leases.items():
            if holder == "account" and lease.settled is None:
                on_open_leases[lease.account_id] += self.lease_usage.get(lease_id, 0)
        found = []
        for account in sorted(set(self.usage) | set(self.settled), key=str):
            counted = self.settled[account] + on_open_leases[account]
            if counted != self.usage[account]:
                detail = (
                    f"spend by its leases {counted} (settled {self.settled[account]}, on open leases "
                    f"{on_open_leases[account]}) but its usage events cost {self.usage[account]}"
                )
                found.append(Violation("spend", account, f"account {account}", detail))
        return found


def _same_price(a: Price, b: Price) -> bool:
    return (a.prompt_per_1k, a.completion_per_1k, a.cached, a.cache_write) == (
        b.prompt_per_1k,
        b.completion_per_1k,
        b.cached,
        b.cache_write,
    )


def _shown(p: Price) -> str:
    return f"prompt {p.prompt_per_1k}, completion {p.completion_per_1k} per 1K (pico-USD)"
