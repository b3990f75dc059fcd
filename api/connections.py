"""Connections to the servers Mesh runs on: NATS (the event log) and PostgreSQL (the read models)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

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


async def open_pool(url: str, max_size: int = 20, configure=None) -> AsyncConnectionPool:
    try:
        probe = await psycopg.AsyncConnection.connect(url, connect_timeout=5)
        await probe.close()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(f"cannot reach PostgreSQL at {_redact(url)}: {reason}") from None
    # `check`: a connection that died with its server (PostgreSQL restarted) is replaced, not handed out
    pool = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        timeout=10,
        configure=configure,
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True, timeout=10)
    return pool


def _redact(url: str) -> str:
    # postgresql://user:secret@host/db -> postgresql://user:***@host/db (each of a comma-separated list)
    if "," in url:
        return ",".join(_redact(part) for part in url.split(","))
    if "@" in url and ":" in url.split("@", 1)[0].split("//", 1)[-1]:
        head, tail = url.split("@", 1)
        return head.rsplit(":", 1)[0] + ":***@" + tail
    return url
