"""Guards around password work: attempt limits per email and per client address, and a thread pool of its
own for the KDF, so a flood of logins waits for itself and never for the threads the gateway's lease
commands run in."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar
from uuid import UUID

from commands.accounts import BadCredentials, EmailTaken, SignupRefused, WrongPassword
from domain.account import normalise_email
from domain.ratelimit import AttemptWindow, RateLimited

T = TypeVar("T")

# scrypt at N=2^17 takes a CPU for about half a second: use at most half of the CPUs for it.
KDF_THREADS = max(1, min(4, (os.cpu_count() or 2) // 2))
MAX_WAITING = 64  # password checks queued for the pool beyond this are refused at once (429)


class LoginGuard:
    def __init__(
        self,
        failures_per_email: int = 10,
        failures_per_address: int = 50,
        signups_per_address: int = 20,
        window_seconds: float = 900.0,
        threads: int = KDF_THREADS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.by_email = AttemptWindow(failures_per_email, window_seconds, "failed attempts for this account", clock)
        self.by_address = AttemptWindow(failures_per_address, window_seconds, "failed logins from this address", clock)
        self.signups = AttemptWindow(signups_per_address, window_seconds, "sign-ups from this address", clock)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="mesh-kdf")
        self.waiting = 0

    async def run(self, use_case: Callable[..., T], *args) -> T:
        """Run a use case that runs the KDF in the KDF pool."""
        if self.waiting >= MAX_WAITING:
            raise RateLimited("too many password checks at once; try again in 1 s", 1)
        self.waiting += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, use_case, *args)
        finally:
            self.waiting -= 1

    def login(self, address: str, email: str):
        """A failed login counts for the address and the email; a successful one counts for neither (however
        many run at once) and clears the email's count."""
        holds = [(self.by_address, address), (self.by_email, normalise_email(email))]
        return self._attempt(BadCredentials, holds, clear=self.by_email)

    def signup(self, address: str, email: str):
        """Every sign-up counts for the address; one for a taken email (or with an invite code that is not
        valid) counts for that email too."""
        return self._attempt(
            (EmailTaken, SignupRefused), [(self.by_email, normalise_email(email))], every=((self.signups, address),)
        )

    def password_change(self, account_id: UUID):
        return self._attempt(WrongPassword, [(self.by_email, f"account:{account_id}")], clear=self.by_email)

    @contextmanager
    def _attempt(
        self,
        failure: type[Exception] | tuple[type[Exception], ...],
        failures: list[tuple[AttemptWindow, str]],
        every: tuple[tuple[AttemptWindow, str], ...] = (),
        clear: AttemptWindow | None = None,
    ) -> Iterator[None]:
        """Refuse at once when a window is full. `failures` are counted after the work, when it fails with
        `failure`: a password that turns out right never takes an attempt, not even while it is checked.
        `every` are counted before the work (parallel sign-ups are limited too) and taken back only when it
        fails otherwise (bad input). A success clears `clear` for its key."""
        for window, key in failures:
            window.check(key)
        taken: list[tuple[AttemptWindow, str]] = []
        try:
            for window, key in every:
                window.acquire(key)
                taken.append((window, key))
            yield
        except failure:
            for window, key in failures:
                window.record(key)
            raise
        except BaseException:
            for window, key in taken:
                window.release(key)
            raise
        if clear is not None:
            for window, key in failures:
                if window is clear:
                    window.clear(key)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
