"""Leaving NATS (api/connections.py `disconnect_nats`): drained while the server is there, closed without an error
when the server went away first, as when a service manager stops every process of Mesh at once."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from api.connections import connect_nats, disconnect_nats
from api.embedded import NatsServer


async def test_leaving_a_live_server_drains_the_connection(nats_url):
    nc = await connect_nats(nats_url)
    got: list[bytes] = []

    async def received(msg) -> None:
        got.append(msg.data)

    await nc.subscribe("mesh.test.leave", cb=received)
    await nc.publish("mesh.test.leave", b"before leaving")
    await disconnect_nats(nc)
    assert nc.is_closed and got == [b"before leaving"]


async def test_leaving_a_server_that_stopped_first_closes_without_an_error(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    try:
        nc = await connect_nats(server.url)
        await nc.subscribe("mesh.test.leave")
    finally:
        server.stop()
    for _ in range(100):
        if nc.is_reconnecting:
            break
        await asyncio.sleep(0.05)
    assert nc.is_reconnecting
    with pytest.raises(nats.errors.ConnectionReconnectingError):
        await nc.drain()  # what every `mesh` process did on its way out, with a traceback
    await disconnect_nats(nc)
    assert nc.is_closed
