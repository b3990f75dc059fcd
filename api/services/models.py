"""The catalog as the account sees it."""

from __future__ import annotations

from api.errors import ApiError
from api.runtime import Runtime
from gateway.catalog import Model


class ModelService:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    def enabled(self, free_only: bool = False) -> list[Model]:
        """Enabled models by id; `free_only` keeps those with an explicit price of 0."""
        models = [m for m in self.runtime.catalog.enabled() if m.price.is_free or not free_only]
        return sorted(models, key=lambda m: m.id)


def check_model(runtime: Runtime, model: str | None, field: str) -> None:
    """A model named in a setting (a key's default, a template's default) must be enabled now."""
    if model is not None and runtime.catalog.get(model) is None:
        raise ApiError(404, f"{field} {model!r} is not an enabled model; GET /api/models lists them", "model_not_found")
