"""The composition root: connects NATS and PostgreSQL and wires commands, projections, the gateway and the
application services (api/composition.py)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from api.autorefill import AutoRefillManager
from api.composition import Services, compose
from api.connections import StartupError, connect_nats, disconnect_nats, open_pool
from api.embedded import EmbeddedServerError
from api.projection_process import BACKGROUND_POSTGRES, ProjectionProcess
from api.exports import ExportGate
from api.lease_broker import CommandLeases
from api.gateway_wiring import ReadModelKeys, ReadModelTemplates, make_adapter
from api.logins import LoginGuard
from api.payments import STRIPE, PaymentGuard, PaymentProvider
from api.live_catalog import apply_operator_changes
from api.log_entries import EXPORT_IDLE_SECONDS
from api.projection_worker import ProjectionWorker, ensure_read_models
from api.read_models import DIRECTORY
from api.services.events import HEARTBEAT_SECONDS
from api.services.read_your_writes import ReadModelWaiter
from api.supervisor import Child, Supervisor
from api.upkeep import Upkeep
from api.webhook_delivery import WebhookOptions
from commands.accounts import DEFAULT_SESSION, AccountCommands
from commands.app import MeshApplication
from commands.autorefill import AutoRefillCommands
from commands.leasing import BudgetCommands
from commands.catalog import CatalogCommands
from commands.keys import KeyCommands
from commands.stream import (
    DEFAULT_STREAM_MAX_BYTES,
    DEFAULT_REPLICAS,
    MAX_BYTES_ENV,
    REPLICAS_ENV,
    bodies_stream,
    ensure_bodies_stream,
    ensure_log_stream,
)
from commands.prompt_templates import TemplateCommands
from commands.topups import TopUpCommands
from commands.webhooks import WebhookCommands
from domain.credentials import PASSWORD_KDF, ScryptParams
from domain.quota import Quotas
from gateway import feed
from gateway.admission import KeyInfo
from gateway.app import Gateway
from gateway.base import DISCONNECT_DRAIN_SECONDS
from gateway.refusals import FLUSH_SECONDS as REFUSALS_FLUSH_SECONDS
from gateway.refusals import Refusals
from gateway.bodies import BodyPublisher
from gateway.metrics import GatewayMetrics
from gateway.lease_admission import LEASE_TTL, Budgets
from gateway.catalog import Catalog
from gateway.freelimit import DEFAULT_FREE_RPM
from gateway.key_rate import KeyRates, NatsWindows, rates_bucket
from gateway.keys import KeyCache
from gateway.prompt_templates import TemplateCache
from gateway.usage import UsagePublisher
from projections import logs
from projections.source import StreamSource

log = logging.getLogger("mesh")

__all__ = ["Runtime", "StartupError"]


class Runtime:
    """Everything one Mesh process holds. `start()` is idempotent on the servers: it creates
    the stream and the schema if missing and keeps whatever data is there."""

    def __init__(
        self,
        *,
        nats_url: str,
        database_url: str,
        catalog: Catalog,
        operator_token: str,
        stream: str = "MESH",
        run_projections: bool = True,
        spool_dir: Path = Path(".mesh/spool"),
        payments: dict[str, PaymentProvider] | None = None,
        topup_limits: tuple[int, int] = (0, 0),
        auto_refill: tuple[int, float] = (3, 60.0),
        projection_process: bool = False,
        background_postgres: int | None = None,
        background_cpus: frozenset[int] | None = None,
        background_idle: bool = True,
        session: timedelta = DEFAULT_SESSION,
        logins: LoginGuard | None = None,
        password_kdf: ScryptParams = PASSWORD_KDF,
        children: dict[str, Child] | None = None,
        lease_ttl: timedelta = LEASE_TTL,
        disconnect_drain_seconds: float = DISCONNECT_DRAIN_SECONDS,
        refusals_flush_seconds: float = REFUSALS_FLUSH_SECONDS,
        free_rpm: int = DEFAULT_FREE_RPM,
        log_retention_days: int = logs.RETENTION_DAYS,
        log_bodies: bool = False,
        export_idle_seconds: float = EXPORT_IDLE_SECONDS,
        events_heartbeat_seconds: float = HEARTBEAT_SECONDS,
        signup: str = "open",
        quotas: Quotas = Quotas(),
        stream_max_bytes: int | None = None,  # None: the default that fits (commands.stream)
        stream_replicas: int = DEFAULT_REPLICAS,  # MESH_STREAM_REPLICAS
        payment_guard: PaymentGuard | None = None,
        metrics_token: str | None = None,
        tracer_provider: Any | None = None,  # an OpenTelemetry SDK TracerProvider: traces on (api/telemetry.py)
        webhooks: WebhookOptions | None = None,
    ):
        self.nats_url = nats_url
        self.database_url = database_url
        self.catalog = catalog
        self.operator_token = operator_token
        self.stream = stream
        self.run_projections = run_projections
        self.spool_dir = spool_dir
        self.payments = payments or {}
        self.topup_limits = topup_limits
        self.auto_refill_max_failures, self.auto_refill_retry = auto_refill
        self.projection_process = projection_process  # run the projections in a child process
        self.background_postgres = background_postgres  # the embedded postmaster's pid: see PostgresPriority
        self.background_cpus = background_cpus  # where the projection worker runs: see api.embedded.background_cpus
        self.background_idle = background_idle  # it and the embedded PostgreSQL at idle priority once started
        self.session = session  # how long a management token lives unused (MESH_SESSION_DAYS)
        self.logins = logins or LoginGuard()  # attempt limits and the KDF's thread pool
        self.password_kdf = password_kdf  # what new password hashes cost (MESH_PASSWORD_KDF_LOG_N)
        self._renewing: dict[str, asyncio.Task] = {}  # token hash -> the task saving its renewal
        self.children = children or {}  # the embedded servers `mesh up` started, by name: kept running
        self.supervisor = Supervisor()
        self.lease_ttl = lease_ttl
        self.disconnect_drain_seconds = disconnect_drain_seconds
        self.refusals_flush_seconds = refusals_flush_seconds
        self.free_rpm = free_rpm  # requests a minute per account to free models
        self.log_retention_days = log_retention_days
        self.log_bodies = log_bodies
        self.exports = ExportGate()  # the log exports running, one per account
        self.export_idle_seconds = export_idle_seconds  # how long an export's write may wait for its client
        self.events_heartbeat_seconds = events_heartbeat_seconds  # an event stream's quiet spell before a heartbeat
        self.signup = signup  # MESH_SIGNUP: open, invite or closed
        self.quotas = quotas
        self.stream_max_bytes = stream_max_bytes
        self.stream_replicas = stream_replicas
        self.payment_guard = payment_guard or PaymentGuard()  # card payment attempts and pending top-ups
        self.metrics_token = metrics_token  # MESH_METRICS_TOKEN: reads GET /metrics, besides the operator token
        self.tracer_provider = tracer_provider
        self.webhook_options = webhooks or WebhookOptions(secrets.token_urlsafe(32))  # deliveries, when given
        self.projections: ProjectionWorker | None = None  # the projections run in this process (no child)
        self._worker: ProjectionProcess | None = None
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self.nc = await connect_nats(self.nats_url)
        try:
            limit = await ensure_log_stream(self.nc, self.stream, self.stream_max_bytes, self.stream_replicas)
        except Exception as exc:
            hint = (
                f"; MESH_STREAM_MAX_BYTES={self.stream_max_bytes} is more than NATS can store: lower it or give "
                "NATS more disk"
                if "insufficient storage" in str(exc)
                else ""
            )
            raise StartupError(f"cannot create the JetStream stream {self.stream}: {exc}{hint}") from None
        if self.stream_max_bytes is None and limit < DEFAULT_STREAM_MAX_BYTES:
            log.warning(
                "the event log's size limit is %d bytes: NATS cannot reserve the default %d "
                "(set MESH_STREAM_MAX_BYTES to what the NATS volume holds)",
                limit,
                DEFAULT_STREAM_MAX_BYTES,
            )
        self.stream_max_bytes = limit
        if self.log_bodies:
            try:
                await ensure_bodies_stream(self.nc, self.stream, self.log_retention_days, self.stream_replicas)
            except Exception as exc:
                raise StartupError(f"cannot create the JetStream stream {bodies_stream(self.stream)}: {exc}") from None
        self.pool = await open_pool(self.database_url)
        self.waiter = ReadModelWaiter(self.pool, self.nudge)
        outdated = await ensure_read_models(self.pool)
        self.app = await asyncio.to_thread(
            MeshApplication,
            self.nats_url,
            self.stream,
            {MAX_BYTES_ENV: str(self.stream_max_bytes), REPLICAS_ENV: str(self.stream_replicas)},
        )
        self.accounts = AccountCommands(self.app, self.session, signup=self.signup, password_kdf=self.password_kdf)
        self.keys = KeyCommands(self.app, self.quotas)
        self.templates = TemplateCommands(self.app, self.quotas)
        self.webhooks = WebhookCommands(self.app, self.webhook_options.allow_private)
        self.source = StreamSource(self.nc, self.stream)
        self.adapters = {name: make_adapter(p) for name, p in self.catalog.providers.items()}
        self.budget = BudgetCommands(self.app)
        self.catalog_commands = CatalogCommands(self.app)
        self.topups = TopUpCommands(self.app)
        self.auto_refill = AutoRefillCommands(self.app)
        self.budgets = Budgets(CommandLeases(self.budget, self.lease_ttl))
        self.key_cache = KeyCache(ReadModelKeys(self.pool))
        self.key_cache.on_change = self._key_changed
        self.template_cache = TemplateCache(ReadModelTemplates(self.pool))
        self._feed = await feed.follow(
            self.nc, self.stream, feed.handlers(self.key_cache, self.catalog, self.template_cache)
        )
        if self.run_projections:
            worker = ProjectionWorker(
                self.nc,
                self.pool,
                self.stream,
                log_bodies=self.log_bodies,
                retention_days=self.log_retention_days,
                webhooks=self.webhook_options,
            )
            await worker.rebuild_outdated(outdated)
            await worker.catch_up()  # serve from read models that have seen the whole log
        async with self.pool.connection() as conn:
            for m in await apply_operator_changes(self.catalog, conn):
                log.warning(
                    "model %s added by an operator is not served: mesh.toml declares it, or not its provider %s",
                    m.model_id,
                    m.provider,
                )
        self.usage = UsagePublisher(self.nc, self.stream, self.spool_dir / "usage.jsonl")
        self.bodies = BodyPublisher(self.nc, self.stream) if self.log_bodies else None
        self.refusals = Refusals(self.nc, self.stream, self.refusals_flush_seconds)
        self.gateway_metrics = GatewayMetrics()  # what GET /metrics reports of this process's requests
        self.gateway = Gateway(
            self.catalog,
            self.adapters,
            self.key_cache,
            self.budgets,
            self.usage,
            self.template_cache,
            self.disconnect_drain_seconds,
            self.free_rpm,
            self.bodies,
            self.refusals,
            self.gateway_metrics,
            KeyRates(await self._rate_counters()),
        )
        if self.tracer_provider is not None:  # each chat and embeddings request a span (gateway/tracing.py)
            from api.telemetry import TRACER_NAME
            from gateway.tracing import TracedGateway

            self.gateway = TracedGateway(self.gateway, self.tracer_provider.get_tracer(TRACER_NAME))
        self._tasks = [
            asyncio.create_task(self.budgets.run(self._stop), name="budget-sweeper"),
            asyncio.create_task(self.usage.run(self._stop), name="usage-spool"),
            asyncio.create_task(self.refusals.run(self._stop), name="refusal-counts"),
        ]
        if self.bodies is not None:
            self._tasks.append(asyncio.create_task(self.bodies.run(self._stop), name="log-bodies"))
        if self.run_projections:
            if self.projection_process:
                try:
                    self._worker = await asyncio.to_thread(
                        ProjectionProcess(
                            self.nats_url,
                            self.database_url,
                            self.stream,
                            self.background_postgres,
                            self.background_cpus,
                            idle=self.background_idle,
                        ).start
                    )
                except EmbeddedServerError as exc:
                    raise StartupError(str(exc)) from None
            else:
                self.projections = worker
                await worker.follow_appends()
                self._tasks.append(asyncio.create_task(worker.run(self._stop), name="projections"))
            self._tasks += Upkeep(self.pool, self.budget, self.topups, self.lease_ttl, self._stop).start()
            stripe = self.payments.get(STRIPE)  # a StripePayments: the only provider of that name
            if stripe is not None:
                manager = AutoRefillManager(self.pool, self.auto_refill, stripe, self.auto_refill_retry)  # type: ignore[arg-type]
                self._tasks.append(asyncio.create_task(manager.run(self._stop), name="auto-refill"))
        for name, child in self.children.items():
            self.supervisor.watch(name, child, self._postgres_restarted if name == "postgres" else None)
        if self._worker is not None:
            self.supervisor.watch("projections", self._worker)
        self._tasks.append(asyncio.create_task(self.supervisor.run(self._stop), name="supervisor"))
        self.services: Services = compose(self)

    def go_idle(self) -> None:
        """Once Mesh has started: the embedded PostgreSQL takes only the CPU time the gateway leaves over from now on
        (api.embedded.lower_priority says why not before; the projection worker lowers itself once it has started),
        unless MESH_BACKGROUND_PRIORITY=normal."""
        postgres = self.children.get("postgres")
        if postgres is not None and self.background_idle:
            postgres.go_idle()

    async def _rate_counters(self) -> NatsWindows:
        try:
            return await NatsWindows.open(self.nc, self.stream)
        except Exception as exc:
            raise StartupError(
                f"cannot create the JetStream key-value bucket {rates_bucket(self.stream)}: {exc}"
            ) from None

    async def _postgres_restarted(self) -> None:
        """The projection worker starts again too, to lower the priority of the new postmaster's children."""
        if self._worker is not None and self.background_postgres is not None:
            self.background_postgres = self.children["postgres"].process.pid
            self._worker.env[BACKGROUND_POSTGRES] = str(self.background_postgres)
            log.warning("stopping the projection worker: it starts again beside the new PostgreSQL")
            await asyncio.to_thread(self._worker.stop)

    def nudge(self) -> None:
        """Something was just appended: let idle projection runners look now (a projection process wakes
        by itself on every command)."""
        if self.projections is not None:
            self.projections.wake()

    def renew_session(self, account_id: UUID, token_hash: str) -> None:
        """Slide a token's expiry in the background, once however many requests ask at the same time."""
        if token_hash in self._renewing or self._stop.is_set():
            return

        async def renew() -> None:
            try:
                # until caught up the read model still shows it due
                await self.waiter.then_caught_up(DIRECTORY, self.accounts.renew_session, account_id, token_hash)
            except Exception as exc:
                log.warning("could not renew a management token of account %s: %s", account_id, exc)
            finally:
                del self._renewing[token_hash]

        self._renewing[token_hash] = asyncio.create_task(renew(), name="session-renewal")

    def _key_changed(self, key: KeyInfo) -> None:
        if key.status != "active" or key.account_suspended:
            self.budgets.forget_key(key.key_id)

    async def stop(self) -> None:
        """Stop whatever `start` got to; safe to call after a failed start."""
        self._stop.set()
        if hasattr(self, "budgets"):
            await self.budgets.sweep(everything=True)  # give back what this process still holds
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        if self._renewing:
            await asyncio.wait(list(self._renewing.values()), timeout=10)
        if self._worker is not None:
            await asyncio.to_thread(self._worker.stop)
        self.logins.close()
        for adapter in getattr(self, "adapters", {}).values():
            await adapter.aclose()
        if hasattr(self, "app"):
            await asyncio.to_thread(self.app.close)
        if hasattr(self, "pool"):
            await self.pool.close()
        if hasattr(self, "nc"):
            await disconnect_nats(self.nc)
        if self.tracer_provider is not None:  # the batch span processor exports what it still holds
            await asyncio.to_thread(self.tracer_provider.shutdown)
