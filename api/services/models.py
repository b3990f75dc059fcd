"""The catalog as the account sees it."""

from __future__ import annotations

from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from api.services.errors import Missing
from domain.bounds import check_aware
from gateway.catalog import Catalog, Model
from projections import catalog as catalog_read_model


class ModelService:
    def __init__(self, catalog: Catalog, pool: AsyncConnectionPool):
        self.catalog = catalog
        self.pool = pool

    def enabled(self, free_only: bool = False) -> list[Model]:
        """Enabled models by id; `free_only` keeps those with an explicit price of 0."""
        return _listed(self.catalog.enabled(), free_only)

    async def enabled_at(self, at: datetime, free_only: bool = False) -> list[Model]:
        """The enabled models at a past instant: with the operator's price changes and switches in force then,
        on top of mesh.toml as it is now."""
        check_aware(at, "at")
        async with self.pool.connection() as conn:
            return _listed(self.catalog.enabled_with(await catalog_read_model.overrides_at(conn, at)), free_only)


def _listed(models: list[Model], free_only: bool) -> list[Model]:
    return sorted((m for m in models if m.price.is_free or not free_only), key=lambda m: m.id)


def check_model(catalog: Catalog, model: str | None, field: str) -> None:
    """A model named in a setting (a key's default, a template's default) must be enabled now."""
    if model is not None and catalog.get(model) is None:
        raise Missing(f"{field} {model!r} is not an enabled model; GET /api/models lists them", "model_not_found")
