"""Attempt windows with an injected clock, and the login guard's rules on what counts."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from api.logins import LoginGuard
from commands.accounts import BadCredentials, EmailTaken, WrongPassword
from domain.credentials import InvalidPassword
from domain.ratelimit import AttemptWindow, RateLimited


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_window_refuses_until_its_oldest_attempt_ages_out():
    clock = Clock()
    window = AttemptWindow(3, 60, "tries", clock)
    for _ in range(3):
        window.acquire("k")
        clock.now += 10
    with pytest.raises(RateLimited) as refused:
        window.acquire("k")
    assert refused.value.retry_after == 30 and "30 s" in str(refused.value)
    window.acquire("other")  # keys are independent
    clock.now += 29.5
    with pytest.raises(RateLimited) as refused:
        window.acquire("k")
    assert refused.value.retry_after == 1
    clock.now += 0.5
    window.acquire("k")  # the first attempt left the window: one more is allowed
    with pytest.raises(RateLimited):
        window.acquire("k")


def test_release_and_clear_take_attempts_back():
    clock = Clock()
    window = AttemptWindow(2, 60, "tries", clock)
    window.acquire("k")
    window.acquire("k")
    window.release("k")
    window.acquire("k")
    window.clear("k")
    window.acquire("k")
    window.acquire("k")
    with pytest.raises(RateLimited):
        window.acquire("k")


def test_stale_keys_are_swept_so_memory_stays_bounded():
    clock = Clock()
    window = AttemptWindow(1, 60, "tries", clock)
    for i in range(5000):
        window.acquire(f"k{i}")
    clock.now += 61
    for i in range(5000):
        window.acquire(f"new{i}")
    assert len(window._hits) <= 5000 + 1024


def test_windows_need_a_limit_and_a_length():
    with pytest.raises(ValueError):
        AttemptWindow(0, 60, "tries")
    with pytest.raises(ValueError):
        AttemptWindow(1, 0, "tries")


def fail(exc: Exception):
    raise exc


def test_failed_logins_count_per_email_and_address_and_a_success_clears_the_email():
    guard = LoginGuard(failures_per_email=3, failures_per_address=5, clock=Clock())
    for _ in range(3):
        with pytest.raises(BadCredentials), guard.login("10.0.0.1", "Victim@Example.com"):
            fail(BadCredentials("wrong"))
    with pytest.raises(RateLimited), guard.login("10.0.0.2", "victim@example.com "):
        pass  # refused before any work: normalised email
    with guard.login("10.0.0.1", "other@example.com"):
        pass  # a success gives the address its attempt back
    with pytest.raises(BadCredentials), guard.login("10.0.0.1", "other@example.com"):
        fail(BadCredentials("wrong"))
    with pytest.raises(BadCredentials), guard.login("10.0.0.1", "third@example.com"):
        fail(BadCredentials("wrong"))
    with pytest.raises(RateLimited, match="from this address"), guard.login("10.0.0.1", "fourth@example.com"):
        pass
    with guard.login("10.0.0.3", "other@example.com"):
        pass  # success clears other@'s failure
    for _ in range(3):
        with pytest.raises(BadCredentials), guard.login("10.0.0.3", "other@example.com"):
            fail(BadCredentials("wrong"))
    guard.close()


def test_errors_that_are_not_wrong_guesses_do_not_count():
    guard = LoginGuard(failures_per_email=1, failures_per_address=1, signups_per_address=1, clock=Clock())
    for _ in range(3):
        with pytest.raises(InvalidPassword), guard.login("10.0.0.1", "a@example.com"):
            fail(InvalidPassword("too long"))
        with pytest.raises(InvalidPassword), guard.signup("10.0.0.1", "a@example.com"):
            fail(InvalidPassword("too short"))
    guard.close()


def test_every_signup_counts_per_address_and_a_taken_email_per_email():
    guard = LoginGuard(failures_per_email=1, signups_per_address=2, clock=Clock())
    with guard.signup("10.0.0.1", "a@example.com"):
        pass
    with pytest.raises(EmailTaken), guard.signup("10.0.0.2", "b@example.com"):
        fail(EmailTaken("taken"))
    with (
        pytest.raises(RateLimited, match="failed attempts for this account"),
        guard.signup("10.0.0.2", "B@example.com"),
    ):
        pass
    with guard.signup("10.0.0.1", "c@example.com"):
        pass
    with pytest.raises(RateLimited, match="sign-ups from this address"), guard.signup("10.0.0.1", "d@example.com"):
        pass
    guard.close()


def test_wrong_current_passwords_count_per_account():
    guard = LoginGuard(failures_per_email=2, clock=Clock())
    account = uuid.uuid4()
    for _ in range(2):
        with pytest.raises(WrongPassword), guard.password_change(account):
            fail(WrongPassword("wrong"))
    with pytest.raises(RateLimited):
        with guard.password_change(account):
            pass
    with guard.password_change(uuid.uuid4()):
        pass
    guard.close()


async def test_kdf_work_runs_in_its_own_bounded_pool():
    import threading

    guard = LoginGuard(threads=1)
    release = threading.Event()
    names = []

    def work() -> None:
        names.append(threading.current_thread().name)
        release.wait(5)

    first = asyncio.ensure_future(guard.run(work))
    queued = [asyncio.ensure_future(guard.run(work)) for _ in range(63)]
    await asyncio.sleep(0.05)
    with pytest.raises(RateLimited, match="too many password checks"):
        await guard.run(work)
    release.set()
    await asyncio.gather(first, *queued)
    assert set(names) == {"mesh-kdf_0"}
    guard.close()


def test_check_counts_nothing_and_record_counts_after_the_fact():
    window = AttemptWindow(2, 60, "tries", Clock())
    for _ in range(5):
        window.check("k")
    window.record("k")
    window.record("k")
    window.record("k")  # checked before the window filled: still counted
    with pytest.raises(RateLimited):
        window.check("k")


def test_logins_in_flight_take_no_attempt_until_they_fail():
    guard = LoginGuard(failures_per_email=1, failures_per_address=1, clock=Clock())
    with guard.login("10.0.0.1", "a@example.com"), guard.login("10.0.0.1", "a@example.com"):
        pass  # two right passwords checked at once: neither is refused for the other
    with pytest.raises(BadCredentials), guard.login("10.0.0.1", "a@example.com"):
        fail(BadCredentials("wrong"))
    with pytest.raises(RateLimited), guard.login("10.0.0.1", "a@example.com"):
        pass
    guard.close()
