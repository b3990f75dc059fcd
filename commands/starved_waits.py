"""Waiting on NATS from a process that may be starved of CPU: the projection worker runs at idle priority, and a
gateway saturating the machine can leave it none for seconds. A wait that timed out while this thread was runnable
but without a CPU (Linux's schedstat run delay) was this process's, not the server's, and is not a failure; where
the kernel does not say, a time-out is a time-out."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout

log = logging.getLogger("mesh.eventlog")

CATCH_UP_TURNS = 3  # event-loop turns that parse and hand over what already arrived before a read counts as stalled
STARVED_SHARE = 0.5  # of a timed-out wait spent runnable without a CPU: the process starved, NATS did not


async def request(nc: NATS, subject: str, payload: bytes, timeout: float) -> Msg:
    """`nc.request`, asked again when it timed out only because this process did not get a CPU to read the
    answer."""
    while True:
        before = run_delay()
        try:
            return await nc.request(subject, payload, timeout=timeout)
        except NatsTimeout:
            if not starved(before, timeout):
                raise
            log.info("%s: this process waited for a CPU, not for NATS; asking again", subject)


def starved(run_delay_before: int | None, timeout: float) -> bool:
    """Whether this thread spent most of the `timeout` seconds since `run_delay_before` (`run_delay`) runnable
    without a CPU: a wait it timed out on was its own, not the server's."""
    after = run_delay()
    if run_delay_before is None or after is None:
        return False
    return after - run_delay_before >= timeout * 1e9 * STARVED_SHARE


def run_delay() -> int | None:
    """Nanoseconds this thread has spent runnable but waiting for a CPU; None where the kernel does not say."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None


async def until_done(done: asyncio.Future, arrived: list, timeout: float) -> None:
    """Wait for `done` while `arrived` keeps growing; TimeoutError after `timeout` seconds without growth, unless
    this process spent them waiting for a CPU (see `request`).

    A timer can fire in the same event-loop turn as the data that was due before it, ahead of the client's read
    task that parses it, so a few turns are given to that work before a quiet spell counts as a stall."""
    while True:
        seen, before = len(arrived), run_delay()
        try:
            await asyncio.wait_for(asyncio.shield(done), timeout)
            return
        except asyncio.TimeoutError:
            for _ in range(CATCH_UP_TURNS):
                await asyncio.sleep(0)
            if done.done():
                done.result()
                return
            if len(arrived) == seen and not starved(before, timeout):
                raise
