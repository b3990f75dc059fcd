"""The JetStream stream that holds the event log."""

from __future__ import annotations

from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from domain.events import subject_prefix


def stream_config(stream: str) -> StreamConfig:
    """The log's settings: durable, append-only (no delete, no purge, no expiry), atomic batches, direct reads."""
    return StreamConfig(
        name=stream,
        subjects=[f"{subject_prefix(stream)}.>"],
        storage=StorageType.FILE,
        discard=DiscardPolicy.NEW,
        max_age=0,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
    )


async def ensure_stream(nc: NATS, stream: str = "MESH") -> None:
    """Create the stream, or bring an existing one to this config. Idempotent; never loses data."""
    js = nc.jetstream()
    config = stream_config(stream)
    try:
        await js.stream_info(stream)
    except NotFoundError:
        await js.add_stream(config)
        return
    await js.update_stream(config)
