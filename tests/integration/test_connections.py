"""Leaving NATS (api/connections.py `disconnect_nats`): drained while the server is there, closed without an error
when the server went away first, as when a service manager stops every process of Mesh at once. The PostgreSQL
pool: while the server cannot be reached, a request gives up in about a second instead of the pool's timeout."""

from __future__ import annotations

import asyncio
import time

import nats.errors
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from api.connections import OutageAwarePool, connect_nats, disconnect_nats
from api.embedded import NatsServer
from api.postgres_server import PostgresServer

WHOLE_TIMEOUT = 4.0  # the pool's timeout in the test, well above api.connections.OUTAGE_TIMEOUT


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


async def test_while_postgresql_is_down_a_request_gives_up_in_a_second_and_it_heals_when_back(tmp_path):
    server = PostgresServer(tmp_path / "pg").start()
    port = server.port
    pool = OutageAwarePool(
        server.url, min_size=1, open=False, timeout=WHOLE_TIMEOUT, check=AsyncConnectionPool.check_connection
    )
    await pool.open(wait=True)

    async def request() -> float:
        started = time.monotonic()
        async with pool.connection() as conn:
            await conn.execute("select 1")
        return time.monotonic() - started

    try:
        await request()
        assert not pool.unreachable()
        server.stop()
        started = time.monotonic()
        with pytest.raises((PoolTimeout, psycopg.OperationalError)):  # the first one finds out: the whole timeout
            await request()
        assert time.monotonic() - started >= WHOLE_TIMEOUT - 0.5 and pool.unreachable()
        for _ in range(3):  # then each gives up in about OUTAGE_TIMEOUT
            started = time.monotonic()
            with pytest.raises((PoolTimeout, psycopg.OperationalError)):
                await request()
            assert time.monotonic() - started < WHOLE_TIMEOUT - 1, "waited out the pool's whole timeout"
        server = PostgresServer(tmp_path / "pg", port=port).start()
        deadline = time.monotonic() + 60
        while True:  # the pool connects again by itself (with backoff); requests go through again
            try:
                await request()
                break
            except (PoolTimeout, psycopg.OperationalError):
                assert time.monotonic() < deadline, "the pool never connected again"
        assert not pool.unreachable()  # a request waits the whole timeout again when all connections are busy
    finally:
        await pool.close()
        server.stop()
