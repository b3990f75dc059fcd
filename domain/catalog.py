"""Runtime changes to the model catalog: prices and availability, as events.

mesh.toml declares the models; the operator can then change a model's price or
switch it off without a restart. Each model's changes live on one aggregate
whose id derives from the model id. A change applies to requests that start
after it; each usage event carries the price it was charged at.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.pricing import Price


class ModelSettings(Aggregate):
    class Registered(Aggregate.Created):
        model_id: str

    class PriceChanged(Aggregate.Event):
        model_id: str
        prompt_per_1k: int
        completion_per_1k: int
        by: str
        cached_per_1k: int | None = None  # None: the prompt price
        cache_write_per_1k: int | None = None  # None: the prompt price
        operator: str | None = None  # the acting operator (an account id, or "token")

    class Enabled(Aggregate.Event):
        model_id: str
        by: str
        operator: str | None = None

    class Disabled(Aggregate.Event):
        model_id: str
        by: str
        operator: str | None = None

    @staticmethod
    def create_id(model_id: str) -> UUID:
        return uuid5(NAMESPACE_URL, "mesh:model:" + model_id)

    @event(Registered)
    def __init__(self, model_id: str):
        self.model_id = model_id
        self.price: Price | None = None  # None: as declared in mesh.toml
        self.enabled: bool | None = None

    def change_price(self, price: Price, by: str, operator: str | None = None) -> None:
        if price != self.price:
            self._change_price(
                self.model_id,
                price.prompt_per_1k,
                price.completion_per_1k,
                by,
                price.cached_per_1k,
                price.cache_write_per_1k,
                operator,
            )

    @event(PriceChanged)
    def _change_price(
        self,
        model_id: str,
        prompt_per_1k: int,
        completion_per_1k: int,
        by: str,
        cached_per_1k: int | None = None,
        cache_write_per_1k: int | None = None,
        operator: str | None = None,
    ) -> None:
        self.price = Price(prompt_per_1k, completion_per_1k, cached_per_1k, cache_write_per_1k)

    def enable(self, by: str, operator: str | None = None) -> None:
        if self.enabled is not True:
            self._enable(self.model_id, by, operator)

    @event(Enabled)
    def _enable(self, model_id: str, by: str, operator: str | None = None) -> None:
        self.enabled = True

    def disable(self, by: str, operator: str | None = None) -> None:
        if self.enabled is not False:
            self._disable(self.model_id, by, operator)

    @event(Disabled)
    def _disable(self, model_id: str, by: str, operator: str | None = None) -> None:
        self.enabled = False
