"""The catalog a running Mesh serves: mesh.toml with what operators changed since (models added, prices set, models
switched on or off), as the catalog read model holds it. `mesh up` starts from it; `mesh models discover` marks a
provider's models with it when it runs beside a Mesh."""

from __future__ import annotations

import psycopg

from gateway.catalog import Catalog
from projections import catalog as catalog_read_model
from projections.catalog import AddedModel


async def apply_operator_changes(catalog: Catalog, conn: psycopg.AsyncConnection) -> list[AddedModel]:
    """Apply the operators' changes to `catalog` (mesh.toml's); the added models it cannot serve (mesh.toml
    declares their id, or not their provider)."""
    unserved: list[AddedModel] = []
    for m in await catalog_read_model.added(conn):  # before the overrides, which may change them
        if catalog.add(m.model_id, m.provider, m.upstream, m.price, m.max_output_tokens, m.context_tokens) is None:
            unserved.append(m)
    for model_id, (price, enabled) in (await catalog_read_model.overrides(conn)).items():
        catalog.apply(model_id, price, enabled)
    return unserved
