"""The key rate counters on a real nats-server (gateway/key_rate.py NatsWindows): created from revision 0, written
only over the revision last read, and shared by two connections (two gateway processes) under concurrency."""

from __future__ import annotations

import asyncio
import uuid

import nats
import pytest

from gateway.admission import KeyInfo
from gateway.errors import GatewayError
from gateway.key_rate import WINDOW_TTL, Conflict, KeyRates, NatsWindows, rates_bucket


async def test_a_counter_is_written_only_over_the_revision_last_read(nc, stream_name):
    windows = await NatsWindows.open(nc, stream_name)
    name = f"{uuid.uuid4()}.1"
    assert await windows.read(name) == (0, 0, 0)
    first = await windows.write(name, 1, 100, 0)
    with pytest.raises(Conflict):
        await windows.write(name, 1, 100, 0)  # created already
    second = await windows.write(name, 2, 150, first)
    with pytest.raises(Conflict):
        await windows.write(name, 3, 200, first)  # stale
    assert await windows.read(name) == (2, 150, second)
    info = await nc.jetstream().stream_info(f"KV_{rates_bucket(stream_name)}")
    assert info.config.max_age == WINDOW_TTL and info.config.storage == "memory"


async def test_two_processes_admit_no_more_than_the_limit_together(nats_url, stream_name):
    connections = [await nats.connect(nats_url), await nats.connect(nats_url)]
    try:
        rates = [KeyRates(await NatsWindows.open(c, stream_name)) for c in connections]
        key = KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None, rpm_limit=25)

        async def one(i: int):
            try:
                return await rates[i % 2].admit(key, lambda: 0)
            except GatewayError as exc:
                return exc

        results = await asyncio.gather(*(one(i) for i in range(100)))
    finally:
        for c in connections:
            await c.close()
    admitted = [r for r in results if not isinstance(r, GatewayError)]
    codes = {r.code for r in results if isinstance(r, GatewayError)}
    per_window: dict[int, int] = {}
    for r in admitted:
        per_window[r.window] = per_window.get(r.window, 0) + 1
    assert all(n <= 25 for n in per_window.values()), per_window  # a burst may straddle a minute's end
    if len(per_window) == 1:
        assert len(admitted) == 25
    assert codes <= {"key_rpm_limit"}
