"""The `mesh` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import logging
import signal
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

from api.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh", description="Mesh: LLM gateway with prepaid billing")
    parser.add_argument("--config", type=Path, help="mesh.toml (default: $MESH_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser(
        "up",
        help="run everything: embedded NATS and PostgreSQL unless MESH_NATS_URL / "
        "MESH_DATABASE_URL are set, then API, gateway and projections",
    )
    up_parser.add_argument(
        "--no-projections", action="store_true", help="serve API and gateway only (run `mesh projections` elsewhere)"
    )
    projections = sub.add_parser(
        "projections",
        help="run the projection workers only (needs MESH_NATS_URL and "
        "MESH_DATABASE_URL); `quarantine` lists the events a projection set aside, "
        "`retry` applies them again after a fix",
    )
    projections.add_argument(
        "action",
        nargs="?",
        choices=("quarantine", "retry"),
        help="quarantine: list set-aside events; retry: apply them again",
    )
    projections.add_argument("--read-model", help="only this read model (a name as in `mesh rebuild`)")
    rebuild = sub.add_parser("rebuild", help="rebuild a read model from position 0 into new tables, then swap")
    rebuild.add_argument("read_model", help="directory | billing | catalog | templates | logs")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env(config=args.config)
        if args.command == "up":
            return up(settings, run_projections=not args.no_projections)
        if args.command == "projections" and args.action:
            return _run(_quarantine(settings, args.action, args.read_model))
        if args.command == "projections":
            return _run(_projections_only(settings))
        if args.command == "rebuild":
            return _run(_rebuild(settings, args.read_model))
    except (SettingsError, MeshError) as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


class MeshError(RuntimeError):
    pass


def _run(coro):
    """Run on uvloop where it is installed: its loop costs the gateway about half the CPU of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


GC_YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation (CPython: 700)


def settle_garbage_collector() -> None:
    """Once started: move every object alive now (modules, the app, caches: about 100,000) out of the collector's
    reach, and collect the young generation less often. A full collection would walk all of them, tens of
    milliseconds in which no request moves; the objects a request makes die young. The projection worker does
    the same: the events of a batch die with it, so collecting while they are decoded would only walk every
    object alive again and again (bench/logs.py runs its apply rounds this way)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _listen(host: str, port: int) -> socket.socket:
    """Bind the API's port before anything else starts, and keep it for uvicorn: between a check and a later
    bind, an embedded server picking a free port (or any other process) could take it, and `mesh up` failed
    after starting everything with 'address already in use'."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MeshError(f"cannot listen on {host}:{port}: {exc.strerror}; set MESH_PORT to another port") from None
    return sock


class Servers:
    """The NATS and PostgreSQL this process uses: external ones from the settings, or embedded ones it starts."""

    def __init__(self, settings: Settings):
        from api.embedded import background_cpus

        self.settings = settings
        self.started: list = []
        self.children: dict = {}  # what `mesh up` keeps running (api.supervisor), by name
        self.postgres_pid: int | None = None  # the embedded postmaster this process started
        try:  # where the servers and the projection worker run
            self.background_cpus = background_cpus(settings.background_cpus)
        except ValueError as exc:
            raise MeshError(f"MESH_BACKGROUND_CPUS={settings.background_cpus!r}: {exc}") from None

    def __enter__(self) -> "Servers":
        from api.embedded import EmbeddedServerError, NatsServer
        from api.postgres_server import PostgresServer

        s = self.settings
        running = self._running()
        if running is not None and not (s.nats_url and s.database_url):
            # `mesh up` already runs the embedded servers of this data dir: use them, start nothing
            self.nats_url = s.nats_url or running["nats_url"]
            self.database_url = s.database_url or running["database_url"]
            return self
        private_dir(s.data_path)
        try:
            if s.nats_url:
                self.nats_url = s.nats_url
            else:
                nats_server = NatsServer(s.data_path / "nats", cpus=self.background_cpus).start()
                self.started.append(nats_server)
                self.children["nats-server"] = nats_server
                self.nats_url = nats_server.url
            if s.database_url:
                self.database_url = s.database_url
            else:
                pg = PostgresServer(s.data_path / "postgres", background=True, cpus=self.background_cpus).start()
                self.started.append(pg)
                self.children["postgres"] = pg
                self.database_url = pg.url
                self.postgres_pid = pg.process.pid
        except EmbeddedServerError as exc:
            self.__exit__()
            raise MeshError(str(exc)) from None
        if self.started:  # the URLs carry the passwords: for this user only
            self._run_file.unlink(missing_ok=True)
            fd = os.open(self._run_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump({"pid": os.getpid(), "nats_url": self.nats_url, "database_url": self.database_url}, file)
        return self

    def __exit__(self, *_) -> None:
        if self.started:
            self._run_file.unlink(missing_ok=True)
        for server in reversed(self.started):
            server.stop()

    @property
    def _run_file(self) -> Path:
        return self.settings.data_path / "running.json"

    def _running(self) -> dict | None:
        """The embedded servers a live `mesh up` started for this data dir, if any."""
        try:
            running = json.loads(self._run_file.read_text())
            os.kill(running["pid"], 0)
            return running
        except (OSError, ValueError, KeyError):
            return None


def private_dir(path: Path) -> None:
    """Make the data dir readable by this user only (it holds the servers' data and their passwords)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o067:  # one an older version made (group traversal is the embedded PostgreSQL's)
        path.chmod(0o700)


def _load_catalog(settings: Settings):
    from api.config import ConfigError, load_catalog

    try:
        return load_catalog(settings.config_path)
    except ConfigError as exc:
        raise MeshError(str(exc)) from None


def _payments(settings: Settings) -> dict:
    from datetime import timedelta

    from api.payments import BankTransfer, StripePayments

    providers: dict = {
        "bank_transfer": BankTransfer(timedelta(seconds=settings.bank_transfer_seconds), settings.bank_account_details)
    }
    if settings.stripe_secret_key:
        providers["stripe"] = StripePayments(
            settings.stripe_secret_key, settings.stripe_webhook_secret, settings.stripe_api_base
        )
    return providers


def _topup_limits(settings: Settings) -> tuple[int, int]:
    from domain.money import InvalidAmount, usd_to_pico

    try:
        low = usd_to_pico(settings.topup_min_usd, field="MESH_TOPUP_MIN_USD")
        high = usd_to_pico(settings.topup_max_usd, field="MESH_TOPUP_MAX_USD")
    except InvalidAmount as exc:
        raise MeshError(str(exc)) from None
    if not 0 < low <= high:
        raise MeshError("MESH_TOPUP_MIN_USD must be above 0 and at most MESH_TOPUP_MAX_USD")
    return low, high


def _accounts(settings: Settings) -> dict:
    """Session length and login limits for the Runtime."""
    from datetime import timedelta

    from api.logins import LoginGuard

    if not settings.session_days > 0:
        raise MeshError("MESH_SESSION_DAYS must be above 0")
    try:
        logins = LoginGuard(
            settings.login_failures_per_email,
            settings.login_failures_per_address,
            settings.signups_per_address,
            settings.login_window_seconds,
        )
    except ValueError as exc:
        raise MeshError(f"MESH_LOGIN_*/MESH_SIGNUPS_PER_ADDRESS: {exc}") from None
    return {"session": timedelta(days=settings.session_days), "logins": logins}


def _limits(settings: Settings) -> dict:
    """Sign-up mode, quotas, the log's size limit and the payment attempt limits for the Runtime."""
    import msgspec

    from api.payments import PaymentGuard
    from domain.invite import check_signup_mode
    from domain.quota import Quotas

    try:
        signup = check_signup_mode(settings.signup)
        quotas = Quotas(settings.quota_keys, settings.quota_templates, settings.quota_template_versions)
        if min(msgspec.structs.astuple(quotas)) < 1:
            raise ValueError("MESH_QUOTA_* must be at least 1")
        if settings.stream_max_bytes is not None and settings.stream_max_bytes < 1024**2:
            raise ValueError("MESH_STREAM_MAX_BYTES must be at least 1 MiB")
        if settings.pending_topups_per_account < 1:
            raise ValueError("MESH_PENDING_TOPUPS_PER_ACCOUNT must be at least 1")
        payments = PaymentGuard(
            settings.payment_attempts_per_account,
            settings.payment_attempts_per_address,
            settings.payment_window_seconds,
            settings.pending_topups_per_account,
        )
    except ValueError as exc:
        raise MeshError(str(exc)) from None
    return {
        "signup": signup,
        "quotas": quotas,
        "stream_max_bytes": settings.stream_max_bytes,
        "payment_guard": payments,
    }


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def _dashboard(settings: Settings):
    from api.dashboard.pages import DashboardConfig

    return DashboardConfig(settings.stripe_js_url, settings.stripe_publishable_key)


def up(settings: Settings, run_projections: bool = True) -> int:
    import uvicorn

    from api.app import MeshASGI
    from api.http_protocol import GatheringHttpToolsProtocol
    from api.runtime import Runtime, StartupError

    started = time.monotonic()
    # uvicorn re-raises the signal that stopped it; make SIGTERM unwind like Ctrl-C so the
    # embedded servers are stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    catalog = _load_catalog(settings)
    listening = _listen(settings.host, settings.port)
    servers = Servers(settings)
    private_dir(settings.data_path)
    trusted_proxies = settings.trusted_proxy_list
    generated = not settings.operator_token and not settings.operator_token_path.exists()
    token = settings.resolved_operator_token()
    with servers:
        runtime = Runtime(
            nats_url=servers.nats_url,
            database_url=servers.database_url,
            catalog=catalog,
            operator_token=token,
            stream=settings.stream,
            run_projections=run_projections,
            spool_dir=settings.data_path / "spool",
            payments=_payments(settings),
            topup_limits=_topup_limits(settings),
            auto_refill=(settings.auto_refill_max_failures, settings.auto_refill_retry_seconds),
            projection_process=True,
            background_postgres=servers.postgres_pid,
            background_cpus=servers.background_cpus,
            children=servers.children,
            log_retention_days=settings.log_retention_days,
            log_bodies=settings.bodies_logged,
            **_accounts(settings),
            lease_ttl=timedelta(seconds=settings.lease_ttl_seconds),
            disconnect_drain_seconds=settings.disconnect_drain_seconds,
            free_rpm=settings.free_rpm,
            export_idle_seconds=settings.export_idle_seconds,
            **_limits(settings),
        )
        config = uvicorn.Config(
            MeshASGI(runtime, _dashboard(settings)),
            host=settings.host,
            port=settings.port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            # X-Forwarded-For/-Proto only from MESH_TRUSTED_PROXIES: the client's address (for the attempt
            # limits) is the right-most forwarded one that is not itself a trusted proxy, its scheme the proxy's
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=trusted_proxies,
            server_header=False,
            http=GatheringHttpToolsProtocol,
        )
        server = uvicorn.Server(config)

        async def serve() -> None:
            try:
                await runtime.start()
            except StartupError as exc:
                await runtime.stop()
                raise MeshError(str(exc)) from None
            try:
                await _serve_until_stopped()
            finally:
                await runtime.stop()

        async def _serve_until_stopped() -> None:
            task = asyncio.create_task(server.serve(sockets=[listening]))
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            if server.started:
                settle_garbage_collector()
                url = f"http://{settings.host}:{settings.port}"
                print(f"Mesh is up in {time.monotonic() - started:.1f}s", flush=True)
                print(f"  dashboard:         {url}/", flush=True)
                print(f"  API docs:          {url}/schema  (OpenAPI: {url}/schema/openapi.json)", flush=True)
                print(f"  health:            {url}/health", flush=True)
                print(f"  OpenAI-compatible: {url}/v1/models  and  {url}/v1/chat/completions", flush=True)
                print(f"  operator token:    {_shown_operator_token(settings, token, generated)}", flush=True)
                print(f"  data:              {settings.data_path.resolve()}", flush=True)
                print(f"  models:            {', '.join(sorted(catalog.models))}", flush=True)
            await task

        try:
            _run(serve())
        except KeyboardInterrupt:
            pass  # Ctrl-C: uvicorn has shut down gracefully; the servers stop on the way out
        if not server.started:
            raise MeshError("Mesh did not start; see the message above")
    return 0


def _shown_operator_token(settings: Settings, token: str, generated: bool) -> str:
    """The token itself only in the start that generated it (output often lands in logs): one set in the
    environment is the operator's own, one generated earlier is in its file."""
    if settings.operator_token:
        return "from MESH_OPERATOR_TOKEN (not shown)"
    if generated:
        return f"{token}  (generated now, kept in {settings.operator_token_path.resolve()})"
    return f"in {settings.operator_token_path.resolve()}"


async def _projections_only(settings: Settings) -> int:
    from api.projection_worker import BACKGROUND_POSTGRES, PostgresPriority
    from api.runtime import LOG_BODIES, READ_MODELS, RETENTION_EVERY, connect_nats, open_pool, trim_logs
    from commands.stream import bodies_stream, ensure_bodies_stream
    from projections.readmodel import ensure_schema
    from projections.rebuild import rebuild
    from projections.runner import ProjectionRunner
    from projections.source import StreamSource
    from commands.stream import ensure_stream
    from domain.events import subject_prefix

    if not settings.nats_url or not settings.database_url:
        raise MeshError("`mesh projections` needs MESH_NATS_URL and MESH_DATABASE_URL")
    nc = await connect_nats(settings.nats_url)
    await ensure_stream(nc, settings.stream, settings.stream_max_bytes)
    if settings.bodies_logged:
        await ensure_bodies_stream(nc, settings.stream, settings.log_retention_days)
    postmaster = os.environ.get(BACKGROUND_POSTGRES)  # set by `mesh up` for its embedded PostgreSQL
    priority = PostgresPriority(int(postmaster)) if postmaster else None

    async def lower_backend(conn) -> None:
        priority.lower(conn.info.backend_pid)

    pool = await open_pool(settings.database_url, configure=lower_backend if priority else None)
    async with pool.connection() as conn:
        outdated = await ensure_schema(conn, [*READ_MODELS, LOG_BODIES])
    for model in outdated:
        logging.getLogger("mesh").warning("read model %s was built by an older Mesh; rebuilding it", model.name)
        await rebuild(model, nc, pool, settings.stream)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    source = StreamSource(nc, settings.stream)
    runners = [ProjectionRunner(m, source, pool) for m in READ_MODELS]
    if settings.bodies_logged:
        runners.append(ProjectionRunner(LOG_BODIES, StreamSource(nc, bodies_stream(settings.stream)), pool))

    async def wake(_msg) -> None:  # a command was saved: someone may be waiting to read it
        for runner in runners:
            runner.wake()

    await nc.subscribe(f"{subject_prefix(settings.stream)}.agg.>", cb=wake)
    print(f"projections running: {', '.join(m.name for m in READ_MODELS)}", flush=True)
    settle_garbage_collector()

    async def keep_maintenance_low() -> None:  # autovacuum workers come and go
        while not stop.is_set():
            priority.lower_maintenance()
            try:
                await asyncio.wait_for(stop.wait(), 5)
            except asyncio.TimeoutError:
                pass

    async def retention() -> None:  # log months past MESH_LOG_RETENTION_DAYS go, whole partitions at a time
        while not stop.is_set():
            try:
                dropped = await trim_logs(pool, settings.log_retention_days)
                if dropped:  # (not printed: `mesh up` reads only the worker's first line)
                    logging.getLogger("mesh").info("log retention dropped %s", ", ".join(dropped))
            except Exception:
                logging.getLogger("mesh").exception("log retention failed; will retry")
            try:
                await asyncio.wait_for(stop.wait(), RETENTION_EVERY)
            except asyncio.TimeoutError:
                pass

    # under load, a batch every half second: fewer, larger transactions, and less NATS and PostgreSQL work
    # competing with requests for the CPU; the read models trail the stream by that much
    jobs = [runner.run(stop, linger=0.5) for runner in runners] + [retention()]
    if priority is not None:
        jobs.append(keep_maintenance_low())
    await asyncio.gather(*jobs)
    await pool.close()
    await nc.drain()
    return 0


async def _quarantine(settings: Settings, action: str, name: str | None) -> int:
    """List the events the projections set aside, or apply them again; exit 1 while any remains."""
    from api.runtime import READ_MODELS, connect_nats, open_pool
    from projections.quarantine import quarantined, retry
    from projections.source import StreamSource

    models = {m.name: m for m in READ_MODELS}
    if name is not None and name not in models:
        raise MeshError(f"unknown read model {name!r}; choose one of: {', '.join(models)}")
    with Servers(settings) as servers:
        nc = await connect_nats(servers.nats_url)
        pool = await open_pool(servers.database_url)
        try:
            if action == "retry":
                source = StreamSource(nc, settings.stream)
                for model in [models[name]] if name else READ_MODELS:

                    def progress(item, error: str | None) -> None:
                        outcome = "applied" if error is None else f"still fails: {error}"
                        print(f"  {item.read_model} position {item.position} {item.event_name}: {outcome}", flush=True)

                    applied, failing = await retry(model, source, pool, progress)
                    if applied or failing:
                        print(f"{model.name}: {applied} applied, {failing} still quarantined", flush=True)
            async with pool.connection() as conn:
                left = await quarantined(conn, name)
            if action == "quarantine":
                for q in left:
                    print(
                        f"{q.read_model}\t{q.position}\t{q.event_name}\t{q.quarantined_at.isoformat()}\t{q.error}",
                        flush=True,
                    )
            if not left:
                print("no quarantined events", flush=True)
        finally:
            await pool.close()
            await nc.drain()
    return 1 if left else 0


async def _rebuild(settings: Settings, name: str) -> int:
    from api.runtime import LOGS, READ_MODELS, connect_nats, open_pool
    from projections.logs import trim
    from projections.rebuild import rebuild

    models = {m.name: m for m in READ_MODELS}
    if name not in models:
        raise MeshError(f"unknown read model {name!r}; choose one of: {', '.join(models)}")
    with Servers(settings) as servers:
        nc = await connect_nats(servers.nats_url)
        pool = await open_pool(servers.database_url)
        try:

            def progress(position: int, head: int) -> None:
                print(f"\r  {name}: {position}/{head} events", end="", flush=True)

            generation = await rebuild(models[name], nc, pool, settings.stream, progress)
            print(f"\n{name} rebuilt as generation {generation} and now in service", flush=True)
            if name == LOGS.name:  # the log holds every request; what retention had dropped goes again
                await trim(pool, LOGS, settings.log_retention_days)
        finally:
            await pool.close()
            await nc.drain()
    return 0


if __name__ == "__main__":
    sys.exit(main())
