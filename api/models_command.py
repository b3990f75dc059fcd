"""`mesh models discover <provider>`: what a provider in mesh.toml offers, asked with the adapter Mesh would use
(its base URL and credentials), marked with the catalog's ids: mesh.toml's, with what operators changed at runtime
(models added, switched on or off) when the command runs beside a Mesh (a `mesh up` of this data dir, or
MESH_DATABASE_URL), as `GET /admin/providers/{name}/models` marks them."""

from __future__ import annotations

import sys

import msgspec
import psycopg

from api.gateway_wiring import make_adapter
from api.live_catalog import apply_operator_changes
from api.runtime_options import load_catalog
from api.services.errors import ServiceError
from api.services.provider_models import ProviderModelService
from api.servers import running_database
from api.settings import Settings
from gateway.discovery import MAX_MODELS, Offer

CONNECT_SECONDS = 5  # to the running Mesh's PostgreSQL


async def discover_models(settings: Settings, name: str, as_json: bool) -> int:
    catalog = load_catalog(settings)
    database_url = running_database(settings)
    if database_url is not None:
        try:
            async with await psycopg.AsyncConnection.connect(database_url, connect_timeout=CONNECT_SECONDS) as conn:
                await apply_operator_changes(catalog, conn)
        except psycopg.Error as exc:
            print(
                f"mesh: the running Mesh's catalog could not be read ({type(exc).__name__}); "
                "marked from mesh.toml only",
                file=sys.stderr,
            )
    else:
        print("mesh: no running Mesh found: marked from mesh.toml only", file=sys.stderr)
    provider = catalog.providers.get(name)
    adapters = {name: make_adapter(provider)} if provider is not None else {}
    try:
        offer = await ProviderModelService(catalog, adapters).offered(name)
    except ServiceError as exc:
        print(f"mesh: {exc.message}", file=sys.stderr)
        return 1
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
    print(msgspec.json.encode(offer).decode() if as_json else table(offer))
    return 0


def table(offer: Offer) -> str:
    """The list as a plain table: the provider's id, the Mesh ids serving it (`*`: enabled), its limits."""
    rows = [("MODEL", "MESH ID", "INPUT", "OUTPUT", "CONTEXT", "NAME")]
    for m in offer.models:
        ids = ", ".join(m.mesh_ids) + (" *" if m.enabled else "") if m.mesh_ids else "-"
        limits = (m.input_token_limit, m.output_token_limit, m.context_tokens)
        rows.append((m.id, ids, *("-" if n is None else str(n) for n in limits), m.display_name or ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.append(
        f"{len(offer.models)} models offered by {offer.provider} ({offer.kind})"
        + (f"; more not listed (the list stops at the first {MAX_MODELS})" if offer.truncated else "")
        + "; * enabled. Add one as a [[models]] entry in mesh.toml, or to a running Mesh with POST /admin/models"
        + " (its `upstream` is the MODEL column)."
    )
    return "\n".join(lines)
