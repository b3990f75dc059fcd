"""Runtime changes to the model catalog: models added, prices and availability, as events.

mesh.toml declares the models; the operator can then add a model of a declared
provider, change a model's price or switch it off, without a restart. Each model's changes live on one aggregate
whose id derives from the model id. A change applies to requests that start
after it; each usage event carries the price it was charged at.
"""

from __future__ import annotations

from typing import Any, Callable
from uuid import NAMESPACE_URL, UUID, uuid5

from collections.abc import Collection

from eventsourcing.domain import Aggregate, event

from domain.bounds import MAX_MODEL_ID_LENGTH, check_text
from domain.pricing import Price

MAX_UPSTREAM_LENGTH = 200  # a provider's own model name
MAX_TOKEN_LIMIT = 100_000_000  # the largest max_output_tokens or context_tokens a model may be given


class InvalidModel(ValueError):
    """A model to add breaks a rule (its provider, its name, its limits)."""


class ModelTaken(ValueError):
    """The id to add is a model or alias already."""


def check_limits(max_output_tokens: int, context_tokens: int) -> None:
    """A model's token limits: each at least 1 and at most MAX_TOKEN_LIMIT, the output within the context."""
    for name, value in (("max_output_tokens", max_output_tokens), ("context_tokens", context_tokens)):
        if not 1 <= value <= MAX_TOKEN_LIMIT:
            raise InvalidModel(f"{name} must be at least 1 and at most {MAX_TOKEN_LIMIT}, got {value}")
    if max_output_tokens > context_tokens:
        raise InvalidModel(
            f"max_output_tokens ({max_output_tokens}) is larger than its context_tokens ({context_tokens})"
        )


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

    class Added(Aggregate.Event):
        """A model served from now on under `model_id`, by a provider of mesh.toml, at this price."""

        model_id: str
        provider: str
        upstream: str  # the provider's own model name
        prompt_per_1k: int
        completion_per_1k: int
        by: str
        cached_per_1k: int | None = None  # None: the prompt price
        cache_write_per_1k: int | None = None  # None: the prompt price
        max_output_tokens: int | None = None  # None: the provider kind's default (gateway.catalog.limits)
        context_tokens: int | None = None
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
        self.added = False  # an operator added it (not a model of mesh.toml)

    def add(
        self,
        provider: str,
        upstream: str,
        price: Price,
        max_output_tokens: int,
        context_tokens: int,
        by: str,
        operator: str | None = None,
        *,
        providers: Collection[str],
        taken: bool,
    ) -> None:
        """Serve a model of a declared provider under this id. `providers`: the providers it may use (mesh.toml's);
        `taken`: the id is a model or alias of mesh.toml."""
        if taken or self.added:
            how = "a model of mesh.toml or an alias" if taken else "a model added already"
            raise ModelTaken(f"model id {self.model_id!r} is {how}; choose another id or change that model")
        if not self.model_id.strip() or self.model_id != self.model_id.strip() or self.model_id.startswith("/"):
            raise InvalidModel(
                f"id {self.model_id[:80]!r} must not be empty, start with '/' or start or end with a space"
            )
        check_text(self.model_id, "id", MAX_MODEL_ID_LENGTH, error=InvalidModel)
        if provider not in providers:
            known = ", ".join(sorted(providers)) or "none"
            raise InvalidModel(f"provider {provider[:80]!r} is not a provider of mesh.toml; known: {known}")
        if not upstream.strip():
            raise InvalidModel("upstream (the provider's own model name) must not be empty")
        check_text(upstream, "upstream", MAX_UPSTREAM_LENGTH, error=InvalidModel)
        check_limits(max_output_tokens, context_tokens)
        self._add(
            self.model_id,
            provider,
            upstream,
            price.prompt_per_1k,
            price.completion_per_1k,
            by,
            price.cached_per_1k,
            price.cache_write_per_1k,
            max_output_tokens,
            context_tokens,
            operator,
        )

    @event(Added)
    def _add(
        self,
        model_id: str,
        provider: str,
        upstream: str,
        prompt_per_1k: int,
        completion_per_1k: int,
        by: str,
        cached_per_1k: int | None = None,
        cache_write_per_1k: int | None = None,
        max_output_tokens: int | None = None,
        context_tokens: int | None = None,
        operator: str | None = None,
    ) -> None:
        self.added = True
        self.price = Price(prompt_per_1k, completion_per_1k, cached_per_1k, cache_write_per_1k)
        self.enabled = True

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


def _price(e: Any) -> Price:
    return Price(e.prompt_per_1k, e.completion_per_1k, e.cached_per_1k, e.cache_write_per_1k)


# What each model event changes of a model in the catalog, as (price, enabled), None for what it leaves alone: the one
# table behind every view of the catalog (the catalog read model's rows, the gateway's catalog). Adding a model sets
# its price and switches it on.
MODEL_CHANGES: dict[type, Callable[[Any], tuple[Price | None, bool | None]]] = {
    ModelSettings.Added: lambda e: (_price(e), True),
    ModelSettings.PriceChanged: lambda e: (_price(e), None),
    ModelSettings.Enabled: lambda e: (None, True),
    ModelSettings.Disabled: lambda e: (None, False),
}
