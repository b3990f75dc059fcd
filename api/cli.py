"""The `mesh` command."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from pathlib import Path

from api.log_lines import configure as configure_log
from api.servers import MeshError
from api.settings import Settings, SettingsError
from gateway.pause import stopped_within


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
    operators = sub.add_parser(
        "operators", help="give an existing account the operator role, take it away, or list the operators"
    )
    operators.add_argument("action", choices=("add", "remove", "list"), help="add | remove | list")
    operators.add_argument("email", nargs="?", help="the account's email (add, remove)")
    rebuild = sub.add_parser("rebuild", help="rebuild a read model from position 0 into new tables, then swap")
    rebuild.add_argument("read_model", help="directory | billing | catalog | templates | logs")
    _add_events_commands(sub)
    _add_audit_commands(sub)
    models = sub.add_parser("models", help="the providers' models: `discover <provider>` lists what one offers")
    models.add_argument("action", choices=("discover",))
    models.add_argument("provider", help="a provider's name in mesh.toml")
    models.add_argument("--json", action="store_true", help="print the list as JSON (as the admin route answers)")
    args = parser.parse_args(argv)
    configure_log("text")  # until the settings say otherwise: a bad setting is said in plain text
    try:
        settings = Settings.from_env(config=args.config)
        configure_log(settings.log_format)
        if args.command == "up":
            return up(settings, run_projections=not args.no_projections)
        if args.command == "projections" and args.action:
            from api.maintenance import quarantine

            return _run(quarantine(settings, args.action, args.read_model))
        if args.command == "projections":
            return _run(_projections_only(settings))
        if args.command == "operators":
            from api.operator_roles import operators as operator_roles

            return _run(operator_roles(settings, args.action, args.email))
        if args.command == "models":
            from api.models_command import discover_models

            return _run(discover_models(settings, args.provider, args.json))
        if args.command == "rebuild":
            from api.maintenance import rebuild_read_model

            settle_garbage_collector()  # a replay decodes every event: the collector walks none of what lives on
            return _run(rebuild_read_model(settings, args.read_model))
        if args.command == "events":
            return _events_command(args)
        if args.command == "audit":
            settle_garbage_collector()  # as for a rebuild
            return _audit_command(settings, args)
    except (SettingsError, MeshError) as exc:
        print(f"mesh: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def _add_events_commands(sub) -> None:
    """`mesh events schema|docs`: the public shape of every event."""
    events = sub.add_parser("events", help="schema: the JSON Schema of every event; docs: regenerate docs/events.md")
    events.add_argument("action", choices=("schema", "docs"))
    events.add_argument("--path", type=Path, help="docs: the page to regenerate (default: docs/events.md here)")


def _events_command(args) -> int:
    import json

    from api import event_catalogue

    if args.action == "schema":
        print(json.dumps(event_catalogue.json_schema(), indent=2))
        return 0
    path = args.path or event_catalogue.EVENTS_PAGE
    changed = event_catalogue.write_docs(path)
    print(f"{path}: {'regenerated' if changed else 'already up to date'}")
    return 0


def _add_audit_commands(sub) -> None:
    """`mesh audit [verify]`: replay and compare the read models, or check the log's invariants."""
    audit = sub.add_parser(
        "audit",
        help="replay the stream into scratch tables and compare every read model with the live one (exit 1 on a "
        "difference); `verify` checks invariants on the log itself",
    )
    audit.add_argument("action", nargs="?", choices=("verify",), help="verify: check the log's invariants")
    audit.add_argument("--account", help="only this account's rows (an account id)")
    audit.add_argument(
        "--at",
        help="an ISO 8601 instant: replay only the events up to it and compare what the live models answer about "
        "it (docs/contracts.md)",
    )


def _audit_command(settings: Settings, args) -> int:
    from api.audit_command import audit, verify

    if args.action == "verify":
        return _run(verify(settings, args.account, args.at))
    return _run(audit(settings, args.account, args.at))


def _run(coro):
    """Run on uvloop where it is installed: its loop costs the gateway about half the CPU of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


GC_YOUNG_THRESHOLD = 10_000  # allocations between collections of the youngest generation (CPython: 700)
# Under load (more arrived while a batch was applied) the worker waits this long before its next batch: fewer,
# larger transactions, less NATS and PostgreSQL work competing with requests for the CPU, and read models that
# trail the stream by about this much (bench/README.md, "freshness", weighs it against the gateway's latency).
LOADED_LINGER = 0.02
MAINTENANCE_LOOK_EVERY = 5.0  # seconds between two looks for new PostgreSQL maintenance processes to lower


def settle_garbage_collector() -> None:
    """Once started: move every object alive now (modules, the app, caches: about 100,000) out of the collector's
    reach, and collect the young generation less often. A full collection would walk all of them, tens of
    milliseconds in which no request moves; the objects a request makes die young. The projection worker does
    the same, and so do `mesh rebuild` and `mesh audit`: the events of a batch die with it, so collecting while
    they are decoded would only walk every object alive again and again (bench/logs.py and bench/replay.py run
    their apply rounds this way)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def _exit_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def up(settings: Settings, run_projections: bool = True) -> int:
    import uvicorn

    from api.app import MeshASGI
    from api.http_protocol import GatheringHttpToolsProtocol
    from api.http_server import SignalledServer
    from api.connections import StartupError
    from api.runtime_options import dashboard_config, load_catalog, runtime_for
    from api.servers import Servers, listen, private_dir
    from api.telemetry import tracer_provider

    started = time.monotonic()
    # uvicorn re-raises the signal that stopped it; make SIGTERM unwind like Ctrl-C so the
    # embedded servers are stopped on the way out.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    catalog = load_catalog(settings)
    tracing = tracer_provider()  # before anything starts: a missing extra stops `mesh up` with one line
    listening = listen(settings.host, settings.port)
    servers = Servers(settings)
    private_dir(settings.data_path)
    trusted_proxies = settings.trusted_proxy_list
    generated = not settings.operator_token and not settings.operator_token_path.exists()
    token = settings.resolved_operator_token()
    with servers:
        runtime = runtime_for(settings, servers, catalog, token, run_projections, tracing)
        config = uvicorn.Config(
            MeshASGI(runtime, dashboard_config(settings)),
            host=settings.host,
            port=settings.port,
            lifespan="off",
            log_level="warning",
            access_log=False,
            log_config=None,  # the log is configured once, by `mesh` (api/log_lines.py)
            # X-Forwarded-For/-Proto only from MESH_TRUSTED_PROXIES: the client's address (for the attempt
            # limits) is the right-most forwarded one that is not itself a trusted proxy, its scheme the proxy's
            proxy_headers=bool(trusted_proxies),
            forwarded_allow_ips=trusted_proxies,
            server_header=False,
            http=GatheringHttpToolsProtocol,
        )
        server = SignalledServer(config, on_signal=runtime.supervisor.stand_down)

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
                runtime.go_idle()
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
    """The projection worker (api/projection_worker.py) as a process of its own."""
    from api.connections import connect_nats, disconnect_nats, open_pool
    from api.embedded import lower_priority, running_idle
    from api.projection_process import BACKGROUND_POSTGRES, BACKGROUND_WORKER, PostgresPriority
    from api.projection_worker import ProjectionWorker, ensure_read_models
    from api.read_models import READ_MODELS
    from api.runtime_options import webhook_options
    from commands.stream import ensure_bodies_stream, ensure_stream

    if not settings.nats_url or not settings.database_url:
        raise MeshError("`mesh projections` needs MESH_NATS_URL and MESH_DATABASE_URL")
    nc = await connect_nats(settings.nats_url)
    await ensure_stream(nc, settings.stream, settings.stream_max_bytes, settings.stream_replicas)
    if settings.bodies_logged:
        await ensure_bodies_stream(nc, settings.stream, settings.log_retention_days, settings.stream_replicas)
    postmaster = os.environ.get(BACKGROUND_POSTGRES)  # set by `mesh up` for its embedded PostgreSQL
    priority = PostgresPriority(int(postmaster)) if postmaster else None
    # the read models' retry loops wait the pool's whole timeout: a second's give-up would only make them log more
    lower = priority.lower_connection if priority else None
    pool = await open_pool(settings.database_url, on_checkout=lower, answering=False)
    outdated = await ensure_read_models(pool)
    worker = ProjectionWorker(
        nc,
        pool,
        settings.stream,
        log_bodies=settings.bodies_logged,
        retention_days=settings.log_retention_days,
        webhooks=webhook_options(settings),
    )
    settle_garbage_collector()  # before the rebuilds an upgrade needs, and again once the worker is set up
    await worker.rebuild_outdated(outdated)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await worker.follow_appends()
    print(f"projections running: {', '.join(m.name for m in READ_MODELS)}", flush=True)
    if os.environ.get(BACKGROUND_WORKER):  # `mesh up`'s: from now on, only the CPU time the gateway leaves over
        lower_priority(os.getpid())
    settle_garbage_collector()

    async def keep_maintenance_low() -> None:  # autovacuum workers come and go
        while not stop.is_set():
            if running_idle():
                priority.lower_maintenance()
            await stopped_within(stop, MAINTENANCE_LOOK_EVERY)

    jobs = [worker.run(stop, linger=LOADED_LINGER)]
    if priority is not None:
        jobs.append(keep_maintenance_low())
    await asyncio.gather(*jobs)
    await pool.close()
    await disconnect_nats(nc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
