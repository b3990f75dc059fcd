"""The JetStream stream that holds the event log."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from domain.events import bodies_subject, snapshot_subject, subject_prefix


# Seconds JetStream remembers each `Nats-Msg-Id` (a usage event's trace id) to drop a second copy. It covers the
# usage spool's replay of an event whose ack was lost (the ack timeout, the next replay, a reconnect after a NATS
# restart); a copy stored later is counted once by the read models all the same. No longer than that: JetStream
# keeps one entry per event for the window, which its collector walks again and again, so the window is paid for
# in nats-server's memory and CPU at every request rate (bench/sustained.py shows both over minutes of load).
DUPLICATE_WINDOW = 30.0

# The log's size limit (MESH_STREAM_MAX_BYTES). Full, it refuses new events (discard "new": nothing is ever
# dropped from the log), so every request and change fails until an operator raises it; /health warns from
# STREAM_FULL_WARNING of it on. JetStream reserves it from its store when the stream is made or changed, and
# refuses a limit larger than its store. Unset, it is DEFAULT_STREAM_MAX_BYTES (about 20 million usage events)
# or, where NATS cannot reserve that much (a small disk), the largest half of it that fits, down to
# MIN_DEFAULT_STREAM_MAX_BYTES; a production server sets it to what its NATS volume holds.
DEFAULT_STREAM_MAX_BYTES = 10 * 1024**3
MIN_DEFAULT_STREAM_MAX_BYTES = 256 * 1024**2
INSUFFICIENT_STORAGE = 10047  # JetStream's error: the limit does not fit in its store
STREAM_FULL_WARNING = 0.8
MAX_BYTES_ENV = "MESH_STREAM_MAX_BYTES"  # how the event store's recorder (commands/eventstore.py) gets it

# MESH_STREAM_REPLICAS: how many JetStream servers of a cluster hold each stream Mesh makes (the log, its snapshots,
# the bodies). 1 (a single server) unless set; a 3-node cluster with 3 replicas keeps serving when one node is lost.
# JetStream allows at most 5. Every process of a deployment sets the same value; a process that does not say (None)
# leaves a stream's replicas as they are.
REPLICAS_ENV = "MESH_STREAM_REPLICAS"
DEFAULT_REPLICAS = 1
MAX_REPLICAS = 5


def nats_servers(url: str) -> list[str]:
    """The servers of MESH_NATS_URL: one URL, or several separated by commas (the nodes of a cluster; the client
    connects to one and moves to another when it is lost)."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("MESH_NATS_URL names no server")
    return servers


def stream_config(stream: str, max_bytes: int | None = None, replicas: int | None = None) -> StreamConfig:
    """The log's settings: durable, append-only (no delete, no purge, no expiry), at most `max_bytes` (then
    appends are refused, never old events dropped; None: an existing stream keeps its limit, a new one has
    none), atomic batches, direct reads, duplicates dropped for DUPLICATE_WINDOW."""
    return StreamConfig(
        name=stream,
        subjects=[f"{subject_prefix(stream)}.>"],
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_bytes=max_bytes,
        max_age=0,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
        duplicate_window=DUPLICATE_WINDOW,
        num_replicas=replicas,
    )


def bodies_stream(stream: str) -> str:
    """The stream of request and response bodies (MESH_LOG_BODIES=on) beside the log `stream`."""
    return f"{stream}_BODIES"


def bodies_stream_config(stream: str, max_age_days: int, replicas: int | None = None) -> StreamConfig:
    """Bodies are not the log: they expire after `max_age_days` (the logs' retention) and may be purged."""
    return StreamConfig(
        name=bodies_stream(stream),
        subjects=[bodies_subject(stream, ">")],
        storage=StorageType.FILE,
        max_age=max_age_days * 86_400,
        allow_direct=True,
        num_replicas=replicas,
    )


def snapshots_stream(stream: str) -> str:
    """The stream of aggregate snapshots (commands/snapshots.py) beside the log `stream`."""
    return f"{stream}_SNAPSHOTS"


def snapshots_stream_config(stream: str, replicas: int | None = None) -> StreamConfig:
    """Snapshots are not the log but a cache of it: only each aggregate's latest is kept, and they may be purged
    (every aggregate is then replayed from its events once)."""
    return StreamConfig(
        name=snapshots_stream(stream),
        subjects=[snapshot_subject(stream, ">")],
        storage=StorageType.FILE,
        max_msgs_per_subject=1,
        allow_direct=True,
        num_replicas=replicas,
    )


async def ensure_bodies_stream(nc: NATS, stream: str, max_age_days: int, replicas: int | None = None) -> None:
    await _ensure(nc, bodies_stream_config(stream, max_age_days, replicas))


async def ensure_snapshots_stream(nc: NATS, stream: str, replicas: int | None = None) -> None:
    await _ensure(nc, snapshots_stream_config(stream, replicas))


async def ensure_stream(
    nc: NATS, stream: str = "MESH", max_bytes: int | None = None, replicas: int | None = None
) -> None:
    """The log, with `max_bytes` as its limit (None: whatever limit it has; Mesh's processes pass
    MESH_STREAM_MAX_BYTES, which defaults to DEFAULT_STREAM_MAX_BYTES) on `replicas` servers (None: as it is)."""
    await _ensure(nc, stream_config(stream, max_bytes, replicas))


async def ensure_log_stream(nc: NATS, stream: str, max_bytes: int | None, replicas: int | None = None) -> int:
    """The log with `max_bytes` as its limit (MESH_STREAM_MAX_BYTES, refused by NATS when it does not fit); None:
    the default, halved while NATS cannot reserve it. Returns the limit set."""
    if max_bytes is not None:
        await ensure_stream(nc, stream, max_bytes, replicas)
        return max_bytes
    limit = DEFAULT_STREAM_MAX_BYTES
    while True:
        try:
            await ensure_stream(nc, stream, limit, replicas)
            return limit
        except APIError as exc:
            if exc.err_code != INSUFFICIENT_STORAGE or limit // 2 < MIN_DEFAULT_STREAM_MAX_BYTES:
                raise
            limit //= 2


async def _ensure(nc: NATS, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to this config. Idempotent; never loses data."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
        return
    if config.max_bytes is None:  # not said: the limit stays as it is
        config.max_bytes = info.config.max_bytes
    if config.num_replicas is None:  # not said: the replicas stay as they are
        config.num_replicas = info.config.num_replicas
    await js.update_stream(config)
