"""The event store's private loop: closing it answers every caller still waiting, at once."""

import asyncio
import threading
import time

import pytest
from eventsourcing.persistence import OperationalError

from commands.recorder import _LoopThread


def test_a_caller_waiting_when_the_store_closes_gets_an_error_at_once_not_after_the_timeout():
    runner = _LoopThread()
    outcome: list[BaseException] = []

    def wait_forever() -> None:
        try:
            runner.run(asyncio.sleep(3600), timeout=30)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=wait_forever)
    caller.start()
    time.sleep(0.1)
    started = time.monotonic()
    runner.stop()
    caller.join(5)
    assert not caller.is_alive() and time.monotonic() - started < 5
    assert isinstance(outcome[0], OperationalError) and "closed" in str(outcome[0])
    assert runner.loop.is_closed()


def test_a_call_after_close_is_refused_and_leaves_no_coroutine_behind():
    runner = _LoopThread()
    runner.stop()
    coro = asyncio.sleep(1)
    with pytest.raises(OperationalError, match="closed"):
        runner.run(coro)
    assert coro.cr_frame is None  # closed, so no "never awaited" warning
