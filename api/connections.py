"""Connections to the servers Mesh runs on: NATS (the event log) and PostgreSQL (the read models)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import nats.errors
import psycopg
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from api.servers import MeshError
from commands.stream import nats_servers

log = logging.getLogger("mesh")


class StartupError(MeshError):
    """Mesh could not start; the message is one line for the operator (every `mesh` command says it so)."""


async def _nats_error(exc: Exception) -> None:
    log.debug("NATS: %s", exc or type(exc).__name__)


async def connect_nats(url: str, timeout: float = 5) -> NATS:
    """Connect, reconnecting for ever once connected; an unreachable server at start is an error."""
    nc = NATS()

    async def disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("lost the connection to NATS; reconnecting")

    async def reconnected() -> None:
        log.warning("reconnected to NATS")

    try:
        await asyncio.wait_for(
            nc.connect(
                servers=nats_servers(url),
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_nats_error,
                disconnected_cb=disconnected,
                reconnected_cb=reconnected,
            ),
            timeout,
        )
    except Exception as exc:
        raise StartupError(f"cannot reach NATS at {_redact(url)} ({type(exc).__name__}); is it running?") from None
    return nc


async def disconnect_nats(nc: NATS) -> None:
    """Leave NATS: drain (what was published is flushed, subscriptions end), or close where the connection is
    already lost (a server stopped at the same time as Mesh, as a service manager stopping every process at once
    does): draining then fails, and nothing could be flushed anyway."""
    try:
        await nc.drain()
    except (nats.errors.ConnectionReconnectingError, nats.errors.ConnectionClosedError, TimeoutError):
        # nats-py writes what it still holds to the socket it lost, which uvloop refuses once closed
        with contextlib.suppress(RuntimeError, OSError):
            await nc.close()


POOL_TIMEOUT = 10.0  # seconds a request waits for a connection while PostgreSQL is up (every one is busy)
OUTAGE_TIMEOUT = 1.0  # ... and while the pool's latest tries to connect have all failed


class OutageAwarePool(AsyncConnectionPool):
    """A pool whose requests wait OUTAGE_TIMEOUT, not POOL_TIMEOUT, for a connection while PostgreSQL cannot be
    reached: the API and the gateway then answer 503 (`service_unavailable`, `Retry-After`) in about a second,
    instead of every request hanging for the whole timeout during an outage. Unreachable means: the pool has
    failed to connect since it last connected (its own counters, `get_stats`). A request still waits the whole
    timeout while that is not yet known, and from the pool's first new connection on."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._connected = 0  # the pool's successful connections so far, as last seen
        self._failed_then = 0  # its failed tries when that count last grew

    async def getconn(self, timeout: float | None = None) -> psycopg.AsyncConnection[Any]:
        if timeout is None and self.unreachable():
            timeout = OUTAGE_TIMEOUT
        return await super().getconn(timeout)

    def unreachable(self) -> bool:
        stats = self.get_stats()  # tries to connect, and the failed ones, since the pool opened
        failed = stats.get("connections_errors", 0)
        connected = stats.get("connections_num", 0) - failed
        if connected > self._connected:
            self._connected, self._failed_then = connected, failed
        return failed > self._failed_then


async def open_pool(url: str, max_size: int = 20, on_checkout=None, answering: bool = True) -> AsyncConnectionPool:
    """A pool on `url`, checked first. `answering`: its requests answer someone (the API, the gateway), so during an
    outage they give up after about a second (OutageAwarePool); a background worker's retry loops wait it out.
    `on_checkout(conn)` runs each time a connection is handed out, once it is checked."""
    try:
        probe = await psycopg.AsyncConnection.connect(url, connect_timeout=5)
        await probe.close()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot reach PostgreSQL at {_redact(url)}: {reason}") from None
    # `check`: a connection that died with its server (PostgreSQL restarted) is replaced, not handed out

    async def check(conn: psycopg.AsyncConnection) -> None:
        await AsyncConnectionPool.check_connection(conn)
        if on_checkout is not None:
            on_checkout(conn)

    pool_class = OutageAwarePool if answering else AsyncConnectionPool
    pool = pool_class(url, min_size=1, max_size=max_size, open=False, timeout=POOL_TIMEOUT, check=check)
    await pool.open(wait=True, timeout=POOL_TIMEOUT)
    return pool


def _redact(url: str) -> str:
    # postgresql://user:secret@host/db -> postgresql://user:***@host/db (each of a comma-separated list)
    if "," in url:
        return ",".join(_redact(part) for part in url.split(","))
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        head, tail = url.split("@", 1)
        return head.rsplit(":", 1)[0] + ":***@" + tail
    return url
