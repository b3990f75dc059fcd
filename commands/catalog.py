"""Operator use cases on the model catalog."""

from __future__ import annotations

from collections.abc import Collection

from eventsourcing.application import AggregateNotFoundError

from commands.app import MeshApplication
from domain.catalog import ModelSettings
from domain.pricing import Price


class CatalogCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def change(
        self, model_id: str, price: Price | None, enabled: bool | None, by: str, operator: str | None = None
    ) -> int:
        """Change a model's price and/or availability; returns the stream position (0: nothing changed)."""

        def use_case() -> int:
            settings = self._settings(model_id)
            if price is not None:
                settings.change_price(price, by, operator)
            if enabled is True:
                settings.enable(by, operator)
            elif enabled is False:
                settings.disable(by, operator)
            return self.app.save_all(settings) if settings.pending_events else 0

        return self.app.retrying(use_case)

    def add(
        self,
        model_id: str,
        provider: str,
        upstream: str,
        price: Price,
        limits: tuple[int, int],
        by: str,
        operator: str | None = None,
        *,
        providers: Collection[str],
        taken: bool,
    ) -> int:
        """Add a model served by a provider of mesh.toml (domain/catalog.py add has the rules); `limits`:
        (max_output_tokens, context_tokens). Returns the stream position of the event."""

        def use_case() -> int:
            settings = self._settings(model_id)
            settings.add(provider, upstream, price, *limits, by, operator, providers=providers, taken=taken)
            return self.app.save_all(settings)

        return self.app.retrying(use_case)

    def _settings(self, model_id: str) -> ModelSettings:
        """The model's settings aggregate as stored, or a new one (no operator has changed it yet)."""
        try:
            return self.app.repository.get(ModelSettings.create_id(model_id))
        except AggregateNotFoundError:
            return ModelSettings(model_id=model_id)
