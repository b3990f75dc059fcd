"""The catalog as the account sees it."""

from __future__ import annotations

from api.services.errors import Missing
from gateway.catalog import Catalog, Model


class ModelService:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def enabled(self, free_only: bool = False) -> list[Model]:
        """Enabled models by id; `free_only` keeps those with an explicit price of 0."""
        models = [m for m in self.catalog.enabled() if m.price.is_free or not free_only]
        return sorted(models, key=lambda m: m.id)


def check_model(catalog: Catalog, model: str | None, field: str) -> None:
    """A model named in a setting (a key's default, a template's default) must be enabled now."""
    if model is not None and catalog.get(model) is None:
        raise Missing(f"{field} {model!r} is not an enabled model; GET /api/models lists them", "model_not_found")
