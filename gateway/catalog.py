"""The models clients may ask for, where each one is served, and what it costs."""

from __future__ import annotations

import msgspec

from domain.catalog import check_limits
from domain.pricing import Price

ECHO_MODEL = "mesh/echo"


class Provider(msgspec.Struct, frozen=True):
    name: str
    kind: str  # openai | anthropic | gemini | openai-compatible | mesh
    base_url: str = ""
    api_key: str | None = msgspec.field(default=None)  # resolved from the env var named in mesh.toml
    connect_timeout: float = 5.0
    timeout: float = 600.0
    extra_fields: frozenset[str] = frozenset()  # request fields of the server's own, passed as sent (unpriced)

    def __repr__(self) -> str:  # never print the secret
        return f"Provider(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


# When mesh.toml does not say: (max_output_tokens, context_tokens) of the model family the provider's own model
# name starts with (the longest match; an OpenAI fine-tune "ft:<base>:..." counts as its base), as each provider
# publishes them...
LIMITS_BY_NAME = {
    "openai": {
        "gpt-5": (128_000, 400_000),
        "gpt-4.1": (32_768, 1_047_576),
        "gpt-4o": (16_384, 128_000),
        "gpt-4-turbo": (4_096, 128_000),
        "gpt-3.5-turbo": (4_096, 16_385),
        "o1": (100_000, 200_000),
        "o1-mini": (65_536, 128_000),
        "o1-preview": (32_768, 128_000),
        "o3": (100_000, 200_000),
        "o4-mini": (100_000, 200_000),
    },
    "anthropic": {
        "claude-opus-4-5": (64_000, 200_000),
        "claude-opus-4": (32_000, 200_000),
        "claude-sonnet-4": (64_000, 200_000),
        "claude-haiku-4-5": (64_000, 200_000),
        "claude-3-7-sonnet": (64_000, 200_000),
        "claude-3-5": (8_192, 200_000),
        "claude-3-": (4_096, 200_000),
    },
    "gemini": {
        "gemini-3": (65_536, 1_048_576),
        "gemini-2.5": (65_536, 1_048_576),
        "gemini-2.0": (8_192, 1_048_576),
        "gemini-1.5-pro": (8_192, 2_097_152),
        "gemini-1.5": (8_192, 1_048_576),
    },
}
# ...else by provider kind. Where a request without a limit goes upstream without one (OpenAI, Gemini,
# OpenAI-compatible servers), the model may write up to its real maximum, so an unknown model reserves the most
# any model of its kind writes (an OpenAI-compatible server: its whole context); Anthropic always gets a limit
# (this one, when the client sets none), so there it is one every current Claude model accepts.
LIMIT_DEFAULTS = {
    "openai": (128_000, 400_000),
    "anthropic": (8_192, 200_000),
    "gemini": (65_536, 1_048_576),
    "openai-compatible": (32_768, 32_768),
    "mesh": (4_096, 32_768),
}


def limits(kind: str, upstream: str) -> tuple[int, int]:
    """(max_output_tokens, context_tokens) of a model mesh.toml gives no limits for."""
    families = LIMITS_BY_NAME.get(kind, {})
    name = upstream.removeprefix("ft:").removeprefix("models/")  # Gemini names may carry their resource prefix
    matches = [family for family in families if name.startswith(family)]
    return families[max(matches, key=len)] if matches else LIMIT_DEFAULTS[kind]


def resolved_limits(
    kind: str, upstream: str, max_output_tokens: int | None, context_tokens: int | None
) -> tuple[int, int]:
    """(max_output_tokens, context_tokens) as given, those not given by default (`limits`), checked
    (domain.catalog.check_limits raises InvalidModel): for mesh.toml's models and those an operator adds."""
    default_output, default_context = limits(kind, upstream)
    context = context_tokens if context_tokens is not None else max(default_context, max_output_tokens or 0)
    max_output = max_output_tokens if max_output_tokens is not None else min(default_output, context)
    check_limits(max_output, context)
    return max_output, context


# The most prompt tokens one image part can count, per provider kind, as each provider publishes it (None: the
# model's context_tokens, as nothing smaller is safe). OpenAI: a high-detail image is at most 8 tiles of 512 px
# (85 + 8 x 170 = 1,445 for gpt-4o) or 1,536 patches of 32 px times the model's multiplier (at most 2.46:
# 3,779); gpt-4o-mini counts 2,833 + 8 x 5,667 = 48,169. Anthropic: images are scaled to about 1.15 megapixels,
# about 1,600 tokens. Gemini: 258 tokens per 768 px tile, images scaled to at most 3,072 px: 16 tiles.
IMAGE_TOKENS = {"openai": 3_779, "anthropic": 1_600, "gemini": 16 * 258, "openai-compatible": None, "mesh": 0}
IMAGE_TOKENS_BY_NAME = {"gpt-4o-mini": 48_169}  # OpenAI models whose images count more (by upstream name)


def image_tokens(kind: str, upstream: str, context_tokens: int) -> int:
    """The most tokens one image can count for this model (a bound for the prompt's reservation)."""
    tokens = IMAGE_TOKENS.get(kind)
    if kind == "openai":
        tokens = next((t for name, t in IMAGE_TOKENS_BY_NAME.items() if name in upstream), tokens)
    return context_tokens if tokens is None else min(tokens, context_tokens)


class Model(msgspec.Struct, frozen=True):
    id: str  # what clients send as "model"
    provider: str
    upstream: str  # the provider's own model name
    price: Price
    enabled: bool = True
    max_output_tokens: int = LIMIT_DEFAULTS["mesh"][0]  # the most completion tokens a request may ask for
    context_tokens: int = LIMIT_DEFAULTS["mesh"][1]  # prompt + completion: bounds every prompt's reservation
    image_tokens: int = 0  # the most prompt tokens one image part counts (see image_tokens())
    aliases: tuple[str, ...] = ()  # other names clients may send for it (slash-free, unique in the catalog)
    # fields of a translated front door (gateway/wire/) with no equivalent at this model's provider that the operator
    # lets it drop (the answer's x-mesh-ignored-fields names them) instead of refusing
    ignore_fields: frozenset[str] = frozenset()
    # the models tried, in order, when this one fails with a retryable error (gateway/fallbacks.py); their own
    # fallbacks are not followed
    fallbacks: tuple[str, ...] = ()


ECHO_PROVIDER = Provider(name="mesh", kind="mesh")
ECHO = Model(id=ECHO_MODEL, provider="mesh", upstream="echo", price=Price(0, 0))


class Catalog:
    def __init__(self, providers: list[Provider], models: list[Model]):
        self.providers = {p.name: p for p in [ECHO_PROVIDER, *providers]}
        self.models = {m.id: m for m in [ECHO, *models]}
        self.configured = dict(self.models)  # as mesh.toml says, before any operator change
        self.aliases = {alias: m.id for m in models for alias in m.aliases}

    def get(self, model_id: str) -> Model | None:
        """The enabled model of this id or alias."""
        model = self.models.get(model_id)
        if model is None and model_id in self.aliases:
            model = self.models.get(self.aliases[model_id])
        return model if model is not None and model.enabled else None

    def add(
        self,
        model_id: str,
        provider: str,
        upstream: str,
        price: Price,
        max_output_tokens: int | None = None,
        context_tokens: int | None = None,
    ) -> Model | None:
        """A model an operator added (model.added), served from now on; None when it cannot be: mesh.toml declares
        the id or alias now (mesh.toml wins), or no longer declares its provider. A model already known stays as
        it is (the event heard live and again from the read model at start)."""
        known = self.providers.get(provider)
        if model_id in self.configured or model_id in self.aliases or known is None or provider == ECHO_PROVIDER.name:
            return None
        if model_id not in self.models:
            max_output, context = resolved_limits(known.kind, upstream, max_output_tokens, context_tokens)
            images = image_tokens(known.kind, upstream, context)
            self.models[model_id] = Model(model_id, provider, upstream, price, True, max_output, context, images)
        return self.models[model_id]

    def enabled(self) -> list[Model]:
        return [m for m in self.models.values() if m.enabled]

    def apply(self, model_id: str, price: Price | None = None, enabled: bool | None = None) -> None:
        """An operator's change: effective for requests that resolve their model after it
        (a request in flight keeps the model, and so the price, it started with)."""
        model = self.models.get(model_id)
        if model is not None:
            self.models[model_id] = changed(model, price, enabled)

    def enabled_with(self, overrides: dict[str, tuple[Price | None, bool | None]]) -> list[Model]:
        """The enabled models had the operator's changes been `overrides` (the ones in force at a past instant:
        projections.catalog.overrides_at) on top of mesh.toml as it is now; a model added at runtime counts once
        `overrides` has a change of it (its addition is one: its price, switched on)."""
        added = [m for m in self.models.values() if m.id not in self.configured and m.id in overrides]
        models = [changed(m, *overrides.get(m.id, (None, None))) for m in [*self.configured.values(), *added]]
        return [m for m in models if m.enabled]


def changed(model: Model, price: Price | None, enabled: bool | None) -> Model:
    """A model with an operator's change to its price or switch (None: left alone)."""
    changes = {k: v for k, v in (("price", price), ("enabled", enabled)) if v is not None}
    return msgspec.structs.replace(model, **changes) if changes else model
