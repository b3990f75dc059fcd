"""Requests per minute for free models, per account (all its keys together: keys cost nothing to make, so a
limit per key would be none): they cost nothing, yet each writes a usage event.

A token bucket per account, in memory in each gateway process: `per_minute` requests at once, refilled evenly over a
minute. Paid models need no such limit (the budget bounds them). With several gateway processes each has its
own buckets; the limit is per process.
"""

from __future__ import annotations

import math
import time
from uuid import UUID

from gateway.errors import GatewayError

DEFAULT_FREE_RPM = 60
MAX_BUCKETS = 100_000  # beyond this, full buckets (accounts idle for a minute) are forgotten


class FreeRateLimit:
    def __init__(self, per_minute: int = DEFAULT_FREE_RPM, clock=time.monotonic):
        self.per_minute = per_minute  # 0: no limit
        self.rate = per_minute / 60.0  # requests per second
        self.clock = clock
        self._buckets: dict[UUID, tuple[float, float]] = {}  # account -> (requests left, when counted)

    def admit(self, account_id: UUID, model_id: str) -> None:
        """Count one request of `account_id` (any of its keys) to a free model, or raise a 429 saying when to
        come back."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        left, then = self._buckets.get(account_id, (float(self.per_minute), now))
        left = min(float(self.per_minute), left + (now - then) * self.rate)
        if left < 1.0:
            wait = math.ceil((1.0 - left) / self.rate)
            self._buckets[account_id] = (left, now)
            raise GatewayError(
                429,
                f"free models are limited to {self.per_minute} requests a minute per account (all its keys "
                f"together; {model_id!r} is one); retry in {wait}s",
                "rate_limit_error",
                "free_rate_limited",
                headers=[(b"retry-after", str(wait).encode())],
            )
        if len(self._buckets) >= MAX_BUCKETS and account_id not in self._buckets:
            self._forget_full(now)
        self._buckets[account_id] = (left - 1.0, now)

    def _forget_full(self, now: float) -> None:
        full = [k for k, (left, then) in self._buckets.items() if left + (now - then) * self.rate >= self.per_minute]
        for k in full:
            del self._buckets[k]
