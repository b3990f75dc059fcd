"""`mesh projections quarantine|retry` and `mesh rebuild`: the operator's repairs of the read models."""

from __future__ import annotations

from api.connections import connect_nats, disconnect_nats, open_pool
from api.read_models import FOLLOWERS, LOGS, READ_MODELS
from api.servers import MeshError, Servers
from api.settings import Settings


async def quarantine(settings: Settings, action: str, name: str | None) -> int:
    """List the events the projections set aside, or apply them again; exit 1 while any remains."""
    from projections.quarantine import quarantined, retry
    from projections.source import StreamSource

    models = {m.name: m for m in FOLLOWERS}
    if name is not None and name not in models:
        raise MeshError(f"unknown read model {name!r}; choose one of: {', '.join(models)}")
    with Servers(settings) as servers:
        nc = await connect_nats(servers.nats_url)
        pool = await open_pool(servers.database_url)
        try:
            if action == "retry":
                source = StreamSource(nc, settings.stream)
                for model in [models[name]] if name else FOLLOWERS:

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
            await disconnect_nats(nc)
    return 1 if left else 0


async def rebuild_read_model(settings: Settings, name: str) -> int:
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
            await disconnect_nats(nc)
    return 0
