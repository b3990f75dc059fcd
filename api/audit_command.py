"""`mesh audit` and `mesh audit verify`: beside a running `mesh up` (its servers), or against MESH_NATS_URL and
MESH_DATABASE_URL."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from uuid import UUID

from api.connections import connect_nats, open_pool
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
            await nc.drain()
    for difference in result.shown:
        print(difference.line(), flush=True)
    if result.differences > len(result.shown):
        print(f"... and {result.differences - len(result.shown)} more", flush=True)
    print(result.summary, flush=True)
    return 1 if result.differences else 0


VERIFY_BATCH = 1000  # events read per direct get


async def verify(settings: Settings, account: str | None, at: str | None) -> int:
    """Check the log's invariants (domain/invariants.py) over its events; exit 1 on any violation."""
    import time

    from api.runtime_options import load_catalog
    from domain.events import EVENT_TYPES, decode_event
    from domain.invariants import LogInvariants
    from projections.source import StreamSource

    account_id, instant = _account(account), _instant(at)
    prices = {model_id: model.price for model_id, model in load_catalog(settings).models.items()}
    checks = LogInvariants(prices)
    with Servers(settings) as servers:
        nc = await connect_nats(servers.nats_url)
        try:
            source = StreamSource(nc, settings.stream)
            head, position, started, shown = await source.head(), 0, time.monotonic(), time.monotonic()
            while position < head:
                messages = await source.read(position + 1, VERIFY_BATCH)
                if not messages:
                    break
                for m in messages:
                    if instant is not None and m.time > instant:
                        head = position  # the log as it stood at `at`
                        break
                    if m.topic in EVENT_TYPES:
                        checks.observe(m.position, decode_event(m.topic, m.body, m.originator_id, m.originator_version))
                    position = m.position
                if time.monotonic() - shown >= 1.0:
                    rate = position / max(time.monotonic() - started, 1e-9)
                    _progress(f"audit verify: {position}/{head} events read ({rate:,.0f} events/s)")
                    shown = time.monotonic()
        finally:
            await nc.drain()
    found = [v for v in checks.violations(instant or datetime.now(timezone.utc)) if account_id in (None, v.account_id)]
    for violation in found[:SHOWN]:
        print(violation.line(), flush=True)
    if len(found) > SHOWN:
        print(f"... and {len(found) - SHOWN} more", flush=True)
    print(f"{len(found)} violations in {position} events", flush=True)
    return 1 if found else 0
