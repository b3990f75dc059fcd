"""A NATS request that timed out only because the process got no CPU (at idle priority under a saturated gateway)
is asked again; one that NATS left unanswered still fails (commands/starved_waits.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.errors import TimeoutError as NatsTimeout

from commands import starved_waits


class SlowOnce:
    """A client whose first request times out, and whose second is answered."""

    def __init__(self) -> None:
        self.asked = 0

    async def request(self, subject, payload, timeout):
        self.asked += 1
        if self.asked == 1:
            raise NatsTimeout
        return "answer"


def waited_for_a_cpu(monkeypatch, seconds_per_request: float) -> None:
    """The thread's run delay grows by `seconds_per_request` across each request."""
    delays = iter(range(0, 10**12, int(seconds_per_request * 1e9) or 1))
    monkeypatch.setattr(starved_waits, "run_delay", lambda: next(delays))


def test_a_request_the_process_starved_through_is_asked_again(monkeypatch):
    waited_for_a_cpu(monkeypatch, 4.0)  # of a 5 s time-out: starved
    nc = SlowOnce()
    assert asyncio.run(starved_waits.request(nc, "$JS.API.STREAM.INFO.S", b"", 5.0)) == "answer"
    assert nc.asked == 2


def test_a_request_nats_left_unanswered_still_times_out(monkeypatch):
    waited_for_a_cpu(monkeypatch, 0.001)  # the process had its CPU: NATS did not answer
    nc = SlowOnce()
    with pytest.raises(NatsTimeout):
        asyncio.run(starved_waits.request(nc, "$JS.API.STREAM.INFO.S", b"", 5.0))
    assert nc.asked == 1


def test_where_the_kernel_does_not_say_a_time_out_is_a_time_out(monkeypatch):
    monkeypatch.setattr(starved_waits, "run_delay", lambda: None)
    with pytest.raises(NatsTimeout):
        asyncio.run(starved_waits.request(SlowOnce(), "$JS.API.STREAM.INFO.S", b"", 5.0))


def test_the_run_delay_is_read_from_the_kernel_where_it_says():
    delay = starved_waits.run_delay()
    if Path("/proc/thread-self/schedstat").exists():
        assert isinstance(delay, int) and delay >= 0
    else:
        assert delay is None


def test_a_batch_read_the_process_starved_through_waits_on():
    async def read() -> None:
        done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.3, done.set_result, False)  # the batch's end, late
        await starved_waits.until_done(done, [], 0.05)

    with pytest.MonkeyPatch.context() as patch:
        waited_for_a_cpu(patch, 1.0)  # each 0.05 s wait spent runnable without a CPU
        asyncio.run(read())
    with pytest.MonkeyPatch.context() as patch:
        waited_for_a_cpu(patch, 0.0001)
        with pytest.raises(asyncio.TimeoutError):
            asyncio.run(read())
