"""`mesh audit` and `mesh audit verify`: beside a running `mesh up` (its servers), or against MESH_NATS_URL and
MESH_DATABASE_URL."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from uuid import UUID

from api.connections import connect_nats, disconnect_nats, open_pool
from api.read_models import READ_MODELS
from api.servers import MeshError, Servers
from api.settings import Settings


def _account(value: str | None) -> UUID | None:
    try:
        return UUID(value) if value else None
    except ValueError:
        raise MeshError(f"--account {value!r} is not an account id (a UUID)") from None


def _instant(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MeshError(f"--at {value!r} is not an ISO 8601 instant (e.g. 2026-12-04T16:00:00Z)") from None
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


SHOWN = 100  # violations printed in full; the rest are counted


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def audit(settings: Settings, account: str | None, at: str | None) -> int:
    """Replay into scratch tables, compare with the live read models; exit 1 on any difference."""
    from projections.audit import Audit

    account_id, instant = _account(account), _instant(at)
    with Servers(settings) as servers:
        nc = await connect_nats(servers.nats_url)
        pool = await open_pool(servers.database_url)
        try:
            run = Audit(
                nc,
                pool,
                servers.database_url,
                settings.stream,
                READ_MODELS,
                lambda url, size: open_pool(url, max_size=size),
                account=account_id,
                at=instant,
                retention_days=settings.log_retention_days,
                progress=_progress,
            )
            result = await run.run()
        finally:
            await pool.close()
            await disconnect_nats(nc)
    if result.events < result.head:  # what the live models have not applied yet is not audited
        _progress(f"audit: the live read models had applied {result.events} of the stream's {result.head} events")
    for difference in result.shown:
        print(difference.line(), flush=True)
    if result.differences > len(result.shown):
        print(f"... and {result.differences - len(result.shown)} more", flush=True)
    print(result.summary, flush=True)
    return 1 if result.differences else 0


async def verify(settings: Settings, account: str | None, at: str | None) -> int:
    """Check the log's invariants (domain/invariants.py) over its events; exit 1 on any violation."""
    from api.runtime_options import load_catalog
    from projections.audit_verify import verify_log

    account_id, instant = _account(account), _instant(at)
    prices = {model_id: model.price for model_id, model in load_catalog(settings).models.items()}
    with Servers(settings) as servers:
        nc = await connect_nats(servers.nats_url)
        try:
            found, events = await verify_log(nc, settings.stream, prices, instant, _progress)
        finally:
            await disconnect_nats(nc)
    found = [v for v in found if account_id in (None, v.account_id)]
    for violation in found[:SHOWN]:
        print(violation.line(), flush=True)
    if len(found) > SHOWN:
        print(f"... and {len(found) - SHOWN} more", flush=True)
    print(f"{len(found)} violations in {events} events", flush=True)
    return 1 if found else 0
