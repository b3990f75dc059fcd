"""Attempt windows: at most `limit` attempts per key (an email, a client address) in any `window` seconds.

Pure and in memory (one window per process); the clock is injected so tests can move time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable

_MIN_SWEEP = 1024  # keys held before the first sweep of stale ones


class RateLimited(Exception):
    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after  # whole seconds until an attempt is allowed again


class AttemptWindow:
    def __init__(self, limit: int, window: float, what: str, clock: Callable[[], float] = time.monotonic):
        if limit < 1 or window <= 0:
            raise ValueError("an attempt window needs a limit of at least 1 and a window above 0 seconds")
        self.limit, self.window, self.what, self.clock = limit, window, what, clock
        self._hits: dict[str, deque[float]] = {}
        self._next_sweep = _MIN_SWEEP

    def acquire(self, key: str) -> None:
        """Count an attempt for `key`, or raise RateLimited (counting nothing) when the window is full."""
        self.check(key)
        self.record(key)

    def check(self, key: str) -> None:
        """Raise RateLimited when the window of `key` is full; count nothing."""
        hits = self._hits.get(key)
        if hits is None:
            return
        now = self.clock()
        self._expire(hits, now)
        if len(hits) >= self.limit:
            retry_after = max(1, math.ceil(hits[0] + self.window - now))
            raise RateLimited(f"too many {self.what}; try again in {retry_after} s", retry_after)

    def record(self, key: str) -> None:
        """Count an attempt for `key` that has happened (one checked before it ran may make the window full)."""
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self._next_sweep:
                self._sweep(now)
            hits = self._hits[key] = deque()
        hits.append(now)

    def release(self, key: str) -> None:
        """Take back the latest attempt of `key` (it turned out not to count, e.g. a successful login)."""
        hits = self._hits.get(key)
        if hits:
            hits.pop()

    def clear(self, key: str) -> None:
        self._hits.pop(key, None)

    def _expire(self, hits: deque[float], now: float) -> None:
        while hits and hits[0] <= now - self.window:
            hits.popleft()

    def _sweep(self, now: float) -> None:
        """Forget keys with no attempt left in the window, so memory stays bounded by recent attempts."""
        stale = []
        for key, hits in self._hits.items():
            self._expire(hits, now)
            if not hits:
                stale.append(key)
        for key in stale:
            del self._hits[key]
        self._next_sweep = max(_MIN_SWEEP, 2 * len(self._hits))
