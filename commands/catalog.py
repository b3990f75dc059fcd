"""Operator use cases on the model catalog."""

from __future__ import annotations

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
            try:
                settings = self.app.repository.get(ModelSettings.create_id(model_id))
            except AggregateNotFoundError:
                settings = ModelSettings(model_id=model_id)
            if price is not None:
                settings.change_price(price, by, operator)
            if enabled is True:
                settings.enable(by, operator)
            elif enabled is False:
                settings.disable(by, operator)
            return self.app.save_all(settings) if settings.pending_events else 0

        return self.app.retrying(use_case)
