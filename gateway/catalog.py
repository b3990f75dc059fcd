"""The models clients may ask for, where each one is served, and what it costs."""

from __future__ import annotations

import msgspec

from domain.pricing import Price

ECHO_MODEL = "mesh/echo"


class Provider(msgspec.Struct, frozen=True):
    name: str
    kind: str  # openai | anthropic | gemini | openai-compatible | mesh
    base_url: str = ""
    api_key: str | None = msgspec.field(default=None)  # resolved from the env var named in mesh.toml
    connect_timeout: float = 5.0
    timeout: float = 600.0

    def __repr__(self) -> str:  # never print the secret
        return f"Provider(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


class Model(msgspec.Struct, frozen=True):
    id: str  # what clients send as "model"
    provider: str
    upstream: str  # the provider's own model name
    price: Price
    enabled: bool = True


ECHO_PROVIDER = Provider(name="mesh", kind="mesh")
ECHO = Model(id=ECHO_MODEL, provider="mesh", upstream="echo", price=Price(0, 0))


class Catalog:
    def __init__(self, providers: list[Provider], models: list[Model]):
        self.providers = {p.name: p for p in [ECHO_PROVIDER, *providers]}
        self.models = {m.id: m for m in [ECHO, *models]}

    def get(self, model_id: str) -> Model | None:
        model = self.models.get(model_id)
        return model if model is not None and model.enabled else None

    def enabled(self) -> list[Model]:
        return [m for m in self.models.values() if m.enabled]

    def apply(self, model_id: str, price: Price | None = None, enabled: bool | None = None) -> None:
        """An operator's change: effective for requests that resolve their model after it
        (a request in flight keeps the model, and so the price, it started with)."""
        model = self.models.get(model_id)
        if model is None:
            return
        changes = {k: v for k, v in (("price", price), ("enabled", enabled)) if v is not None}
        if changes:
            self.models[model_id] = msgspec.structs.replace(model, **changes)
