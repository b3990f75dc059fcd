"""`mesh audit verify`: the log's invariants (domain/invariants.py) checked over its events, read once in order."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Callable

from nats.aio.client import Client as NATS

from commands.event_log import decode
from domain.events import EVENT_TYPES
from domain.invariants import LogInvariants, Violation
from domain.pricing import Price
from projections.audit import PROGRESS_EVERY
from projections.source import StreamSource

VERIFY_BATCH = 1000  # events read per direct get by `verify_log`


async def verify_log(
    nc: NATS,
    stream: str,
    prices: dict[str, Price],
    at: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Violation], int]:
    """`mesh audit verify`: the log's invariants over its events (up to those stored by `at`), read once in order;
    the violations and the events read."""
    checks = LogInvariants(prices)
    source = StreamSource(nc, stream)
    head, position = await source.head(), 0
    started = shown = time.monotonic()
    while position < head:
        messages = await source.read(position + 1, VERIFY_BATCH)
        if not messages:
            break
        for m in messages:
            if at is not None and m.time > at:
                head = position  # the log as it stood at `at`
                break
            if m.topic in EVENT_TYPES:
                checks.observe(m.position, decode(m))
            position = m.position
        if progress and time.monotonic() - shown >= PROGRESS_EVERY:
            rate = position / max(time.monotonic() - started, 1e-9)
            progress(f"audit verify: {position}/{head} events read ({rate:,.0f} events/s)")
            shown = time.monotonic()
    return checks.violations(at or datetime.now(timezone.utc)), position
