"""The projection worker: the runners that build the read models from the event log, and the log retention.

One entry point for both ways it runs: inside the serving process (`Runtime` without a projection process) and
as `mesh projections` (the child process `mesh up` starts, or a worker of its own beside `mesh up
--no-projections`)."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from nats.aio.client import Client as NATS
from psycopg_pool import AsyncConnectionPool

from api.read_models import BILLING, FOLLOWERS, LOG_BODIES, READ_MODELS, RETENTION_EVERY, trim_logs
from api.webhook_delivery import WebhookDelivery, WebhookOptions
from commands import event_log
from commands.stream import bodies_stream
from domain.events import aggregate_subject, bodies_subject, event_names, usage_subject
from domain.usage import BodyRecorded, RequestsRefused, UsageRecorded
from projections.readmodel import ReadModel, ensure_schema
from projections.rebuild import rebuild
from projections.runner import CHECKPOINT_EVERY, REPLAY_BATCH, ProjectionRunner
from projections.source import StreamSource
from projections.webhooks import GENERATION as WEBHOOKS_GENERATION
from projections.webhooks import WEBHOOKS
from gateway.pause import stopped_within

log = logging.getLogger("mesh")

# The events a request through the gateway produces: a usage notice wakes the read models that read them.
REQUEST_EVENTS = event_names((UsageRecorded, RequestsRefused, BodyRecorded))
STOP_GRACE = 1.0  # seconds a batch in flight has to end once the worker is told to stop


async def ensure_read_models(pool: AsyncConnectionPool) -> list[ReadModel]:
    """Create the read models' tables where missing; the read models an older Mesh built (to rebuild)."""
    async with pool.connection() as conn:
        return await ensure_schema(conn, [*FOLLOWERS, LOG_BODIES])


class ProjectionWorker:
    """The read models of one Mesh (and the bodies read model with MESH_LOG_BODIES=on), kept up with the log; and
    the webhook outbox with its delivery worker (one per deployment, as this worker is)."""

    def __init__(
        self,
        nc: NATS,
        pool: AsyncConnectionPool,
        stream: str,
        *,
        log_bodies: bool,
        retention_days: int,
        webhooks: WebhookOptions | None = None,
    ):
        self.nc = nc
        self.pool = pool
        self.stream = stream
        self.log_bodies = log_bodies
        self.retention_days = retention_days  # MESH_LOG_RETENTION_DAYS
        self.webhooks = webhooks  # None: no webhook deliveries from this worker
        self.delivery = WebhookDelivery(pool, webhooks) if webhooks is not None else None
        self.runners = self._runners()

    def _runners(self, replay: bool = False) -> list[ProjectionRunner]:
        """A runner per read model. `replay`: for catching up from far behind, reading by consumer and applying
        REPLAY_BATCH events a transaction, as a rebuild does; otherwise small batches by direct get, at the head."""
        source = StreamSource(self.nc, self.stream)
        batch = {"batch_size": REPLAY_BATCH} if replay else {}
        # what the delivery worker sends comes from the outbox (webhooks) and the balances (billing)
        look = self.delivery.look if self.delivery is not None else None
        runners = [
            ProjectionRunner(model, source, self.pool, after_commit=look if model is BILLING else None, **batch)
            for model in READ_MODELS
        ]
        runners.append(
            ProjectionRunner(WEBHOOKS, source, self.pool, generation=WEBHOOKS_GENERATION, after_commit=look, **batch)
        )
        if self.log_bodies:
            bodies = StreamSource(self.nc, bodies_stream(self.stream))
            runners.append(ProjectionRunner(LOG_BODIES, bodies, self.pool, **batch))
        return runners

    async def rebuild_outdated(self, outdated: list[ReadModel]) -> None:
        for model in outdated:
            log.warning("read model %s was built by an older Mesh; rebuilding it from the log", model.name)
            await rebuild(model, self.nc, self.pool, self.stream)

    async def catch_up(self) -> None:
        """Apply the whole log as it is now (before serving from the read models), as a replay."""
        runners = self._runners(replay=True)
        try:
            for runner in runners:
                await runner.catch_up()
        finally:
            for source in {id(runner.source): runner.source for runner in runners}.values():
                await source.close()

    def wake(self) -> None:
        """Something was just appended: let idle runners look now."""
        for runner in self.runners:
            runner.wake()

    async def follow_appends(self) -> None:
        """Hear what any process appends (core NATS sees every message the stream stores): a command wakes
        every runner (someone may be waiting to read it); usage makes the runners that read it look when idle.
        Only a notice: the runners read the stream itself, so a notice lost costs at most their idle poll."""

        usage_readers = [r for r in self.runners if r.model.topics & REQUEST_EVENTS]

        others = [r for r in self.runners if r not in usage_readers]

        def arrived() -> None:
            for runner in usage_readers:
                runner.arrived()
            for runner in others:
                runner.skipped()

        await event_log.on_append(self.nc, aggregate_subject(self.stream, ">"), self.wake)
        await event_log.on_append(self.nc, usage_subject(self.stream, ">"), arrived)
        if self.log_bodies:
            await event_log.on_append(self.nc, bodies_subject(self.stream, ">"), arrived)

    async def run(self, stop: asyncio.Event, linger: float = 0.02) -> None:
        """Apply batches and trim the logs until `stop` is set. A batch in flight then has STOP_GRACE to end; one
        still waiting after that (on a server that went away first) is abandoned: its transaction rolls back, and
        the next start applies it."""
        jobs = [
            *(runner.run(stop, linger=linger) for runner in self.runners),
            self._check_current(stop),
            self._retention(stop),
        ]
        if self.delivery is not None:
            jobs.append(self.delivery.run(stop))
        running = asyncio.gather(*jobs)
        abandon = asyncio.ensure_future(_cancel_after_stop(stop, running))
        try:
            await running
        except asyncio.CancelledError:
            this = asyncio.current_task()
            if not stop.is_set() or (this is not None and this.cancelling()):  # not ours: the worker's caller's
                raise
        finally:
            abandon.cancel()

    async def _check_current(self, stop: asyncio.Event) -> None:
        """Every CHECKPOINT_EVERY, the read models at the head with nothing appended for them since (the notices
        say so, not a read) are marked as checked now, in one statement: what an answer's "as of" says. After a
        reconnect to NATS (notices may have been lost meanwhile) every runner reads first."""
        reconnects = self.nc.stats["reconnects"]
        while not await stopped_within(stop, CHECKPOINT_EVERY):
            if self.nc.stats["reconnects"] != reconnects:
                reconnects = self.nc.stats["reconnects"]
                self.wake()
                continue
            if not self.nc.is_connected:
                continue
            rows = [row for row in (runner.stored() for runner in self.runners) if row is not None]
            if not rows:
                continue
            names, positions = zip(*rows)
            try:
                async with self.pool.connection() as conn:
                    await conn.execute(
                        "update projection_positions p set checked_at = now()"
                        " from unnest(%s::text[], %s::bigint[]) c(name, position)"
                        " where p.name = c.name and p.position = c.position",
                        (list(names), list(positions)),
                    )
            except psycopg.OperationalError as exc:  # a server away (restarting): the runners say so
                log.debug("checking the read models current: PostgreSQL unreachable (%s)", type(exc).__name__)
            except Exception:
                log.exception("checking the read models current failed; will retry")

    async def _retention(self, stop: asyncio.Event) -> None:
        """Log months past MESH_LOG_RETENTION_DAYS go, whole partitions at a time, now and every RETENTION_EVERY."""
        while not stop.is_set():
            try:
                dropped = await trim_logs(self.pool, self.retention_days)
                if dropped:  # (not printed: `mesh up` reads only the worker's first line)
                    log.info("log retention dropped %s", ", ".join(dropped))
            except psycopg.OperationalError as exc:  # a server away (restarting): one line
                log.warning("log retention: PostgreSQL unreachable (%s); will retry", type(exc).__name__)
            except Exception:
                log.exception("log retention failed; will retry")
            await stopped_within(stop, RETENTION_EVERY)


async def _cancel_after_stop(stop: asyncio.Event, running: asyncio.Future) -> None:
    await stop.wait()
    await asyncio.sleep(STOP_GRACE)
    running.cancel()
