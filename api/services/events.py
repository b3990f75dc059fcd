"""Subscribers of the event log: an account's own events, or every account's for the operator, live.

A stream starts at a position (inclusive; by default the next event appended), is pushed by JetStream
(commands/event_log.py) and carries each public event (domain/public_events.py) as the registry documents it,
without secrets' hashes. Whose an event is: usage names its account; a key, template or top-up names it in its first
event; the account's own aggregate and its webhooks are found by id. The aggregates an account opened before the
start are read from the read models once they reached the event before it, so none is missed.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime
from typing import Any, AsyncIterator, Iterator
from uuid import UUID

import msgspec
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from api.read_models import BILLING, DIRECTORY, TEMPLATES
from api.services.errors import Busy, Invalid
from api.services.read_your_writes import ReadModelWaiter
from commands.event_log import Followed, follow
from domain.events import event_type, subject_prefix, usage_subject
from domain.public_events import (
    ACCOUNT_EVENT_NAMES,
    OPENED_WITH_ACCOUNT,
    PUBLIC_EVENT_NAMES,
    is_account_event,
    is_public,
    opened_for,
    own_aggregates,
    public_fields,
)
from domain.usage import RequestsRefused, UsageRecorded
from projections import billing, directory, prompt_templates
from projections.source import StreamSource

log = logging.getLogger("mesh.api")

MAX_STREAMS_PER_ACCOUNT = 5  # event streams open at once per account (the operator counts as one)
MAX_STREAMS = 500  # event streams open at once in one process, each an ordered consumer on NATS
HEARTBEAT_SECONDS = 15.0  # MESH_EVENTS_HEARTBEAT_SECONDS: a comment line after this long without an event
MAX_TYPES_LENGTH = 2000  # characters of the `types` filter
USAGE_EVENTS = (UsageRecorded, RequestsRefused)  # the events on an account's usage subject

OPERATOR = None  # the operator's streams, in the per-account count


class PublicEvent(msgspec.Struct, frozen=True):
    """One event as a subscriber gets it (the SSE `data`)."""

    position: int  # the stream position (the SSE `id`)
    time: datetime  # when the log stored it
    name: str  # the registered name (the SSE `event`)
    aggregate_id: str  # Mesh-Originator-Id: the aggregate, or a usage event's trace id
    version: int  # the aggregate's version after this event (usage: 1)
    data: dict[str, Any]  # the event's fields (docs/events.md), secrets' hashes left out


class StreamGate:
    """The event streams open in this process: MAX_STREAMS_PER_ACCOUNT per account, MAX_STREAMS in all."""

    def __init__(self, per_account: int = MAX_STREAMS_PER_ACCOUNT, total: int = MAX_STREAMS):
        self.per_account, self.total = per_account, total
        self.open: dict[UUID | None, int] = {}

    def check(self, owner: UUID | None) -> None:
        """Busy when the owner (or the process) has no stream left to open."""
        if self.open.get(owner, 0) >= self.per_account:
            raise Busy(
                f"{self.per_account} event streams of this account are open, the most it may hold at once; "
                "close one and try again",
                "too_many_streams",
            )
        if sum(self.open.values()) >= self.total:
            raise Busy(
                f"{self.total} event streams are open on this server, the most it serves; try again shortly",
                "streams_busy",
            )

    @contextmanager
    def hold(self, owner: UUID | None) -> Iterator[None]:
        self.check(owner)
        self.open[owner] = self.open.get(owner, 0) + 1
        try:
            yield
        finally:
            self.open[owner] -= 1
            if not self.open[owner]:
                del self.open[owner]


class Ownership:
    """Which events are one account's: its own aggregates, those it opens later, its usage."""

    def __init__(self, account_id: UUID, aggregates: set[UUID]):
        self.account_id = account_id
        self.aggregates = {str(a) for a in aggregates | own_aggregates(account_id)}

    def owns(self, followed: Followed) -> bool:
        opened = opened_for(followed.event)
        if opened is not None:
            if opened != self.account_id:
                return False
            if isinstance(followed.event, OPENED_WITH_ACCOUNT):
                self.aggregates.add(followed.aggregate_id)
            return True
        return followed.aggregate_id in self.aggregates


class EventService:
    def __init__(
        self,
        nc: NATS,
        stream: str,
        source: StreamSource,
        pool: AsyncConnectionPool,
        waiter: ReadModelWaiter,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        gate: StreamGate | None = None,
    ):
        self.nc, self.stream, self.source = nc, stream, source
        self.pool, self.waiter = pool, waiter
        self.heartbeat_seconds = heartbeat_seconds
        self.gate = gate or StreamGate()

    def event_types(self, types: str | None, operator: bool) -> frozenset[type] | None:
        """The classes a `types` filter names (comma-separated event names), None for every public one; Invalid
        naming the unknown ones and the allowed."""
        if types is None or not types.strip():
            return None
        allowed = PUBLIC_EVENT_NAMES if operator else ACCOUNT_EVENT_NAMES
        names = [name.strip() for name in types.split(",") if name.strip()]
        unknown = [name for name in names if name not in allowed]
        if unknown:
            raise Invalid(
                f"unknown event types: {', '.join(unknown[:10])}; allowed: {', '.join(allowed)}",
                "invalid_event_type",
                "types",
            )
        return frozenset(event_type(name) for name in names)

    async def start_of(self, start: int | None, last_event_id: str | None) -> int:
        """The first position to send: after `Last-Event-ID` (a resumed stream), else `start`, else the next
        event appended."""
        if last_event_id is not None and last_event_id.strip():
            try:
                last = int(last_event_id.strip())
            except ValueError:
                raise Invalid(
                    "Last-Event-ID must be a stream position (the id of the last event received)",
                    "invalid_last_event_id",
                    "Last-Event-ID",
                ) from None
            if last < 0:
                raise Invalid("Last-Event-ID must be a position of 0 or more", "invalid_last_event_id", "Last-Event-ID")
            return last + 1
        if start is not None:
            return max(start, 1)
        return await self.source.head() + 1

    def check_open(self, account_id: UUID | None) -> None:
        """Busy now, before the answer starts, when the caller may open no other stream."""
        self.gate.check(account_id)

    async def events(
        self, account_id: UUID | None, start: int, types: frozenset[type] | None
    ) -> AsyncIterator[PublicEvent | None]:
        """The account's public events (every account's: `account_id` None) from `start` on, those of `types`
        only when given; None after each heartbeat interval without one."""
        with self.gate.hold(account_id):
            owner = await self._ownership(account_id, start) if account_id is not None else None
            async for followed in follow(
                self.nc, self.stream, start, self._subjects(account_id, types), self.heartbeat_seconds
            ):
                if followed is None:
                    yield None
                    continue
                cls = type(followed.event)
                if owner is not None and not owner.owns(followed):
                    continue
                if not (is_account_event(cls) if owner is not None else is_public(cls)):
                    continue
                if types is not None and cls not in types:
                    continue
                yield PublicEvent(
                    followed.position,
                    followed.time,
                    followed.name,
                    followed.aggregate_id,
                    followed.version,
                    public_fields(followed.event),
                )

    def _subjects(self, account_id: UUID | None, types: frozenset[type] | None) -> list[str]:
        """The subjects that hold the wanted events: an account's usage subject and the aggregates' (whose subjects
        name the aggregate, not its account), or only the usage subject when only usage is wanted."""
        prefix = subject_prefix(self.stream)
        if account_id is None:
            return [f"{prefix}.>"]
        usage = usage_subject(self.stream, account_id)
        if types is not None and all(issubclass(cls, USAGE_EVENTS) for cls in types):
            return [usage]
        return [f"{prefix}.agg.>", usage]

    async def _ownership(self, account_id: UUID, start: int) -> Ownership:
        """The account's keys, templates and top-ups opened before `start`: from the read models, once they show
        the event before it (waited for briefly)."""
        for model in (DIRECTORY, TEMPLATES, BILLING):
            await self.waiter.caught_up(model, start - 1)
        async with self.pool.connection() as conn:
            keys = await directory.keys_of(conn, account_id)
            templates = await prompt_templates.templates_of(conn, account_id, archived=True)
            topups = await billing.topups_of(conn, account_id)
        return Ownership(
            account_id, {k.key_id for k in keys} | {t.template_id for t in templates} | {t.id for t in topups}
        )
