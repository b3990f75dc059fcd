"""mesh.toml: providers and models with prices. Secrets stay in the environment."""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec

from domain.catalog import InvalidModel
from domain.money import InvalidAmount
from domain.pricing import Price
from gateway.catalog import ECHO_MODEL, Catalog, Model, Provider, image_tokens, resolved_limits
from gateway.fallbacks import MAX_FALLBACKS
from gateway.fields import extra_fields, ignore_fields

PROVIDER_KINDS = ("openai", "anthropic", "gemini", "openai-compatible")


MAX_ALIASES = 16
ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")  # what clients send as a bare model name (gpt-4o-mini)


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True):
    kind: str
    base_url: str | None = None
    api_key_env: str | None = None
    connect_timeout: float = 5.0
    timeout: float = 600.0
    extra_fields: list[str] = []  # openai-compatible servers: request fields of their own to pass as sent


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    provider: str
    upstream: str
    prompt_usd_per_1k: str | None = None
    completion_usd_per_1k: str | None = None
    enabled: bool = True
    cached_prompt_usd_per_1k: str | None = None  # default: the prompt price
    cache_write_usd_per_1k: str | None = None  # default: the prompt price
    max_output_tokens: int | None = None  # default: gateway.catalog.limits()
    context_tokens: int | None = None
    image_tokens: int | None = None  # default by provider kind and model: gateway.catalog.image_tokens
    aliases: list[str] = []  # other names clients may send: slash-free, unique across the catalog
    ignore_fields: list[str] = []  # front-door fields with no equivalent here, dropped (and said so) not refused
    fallbacks: list[str] = []  # model ids tried in order when this one fails (gateway/fallbacks.py)


class MeshConfig(msgspec.Struct, forbid_unknown_fields=True):
    providers: dict[str, ProviderConfig] = {}
    models: list[ModelConfig] = []


class ConfigError(ValueError):
    pass


DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}


def load_catalog(path: Path | None, env: dict[str, str] | None = None) -> Catalog:
    """Read mesh.toml into a catalog; without a file only `mesh/echo` exists."""
    if path is None:
        return Catalog([], [])
    env = os.environ if env is None else env
    try:
        config = msgspec.toml.decode(Path(path).read_bytes(), type=MeshConfig)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    providers = []
    for name, p in config.providers.items():
        if p.kind not in PROVIDER_KINDS:
            raise ConfigError(f"{path}: provider {name!r} has kind {p.kind!r}; allowed: {', '.join(PROVIDER_KINDS)}")
        base_url = p.base_url or DEFAULT_BASE_URLS.get(p.kind)
        if not base_url:
            raise ConfigError(f"{path}: provider {name!r} needs base_url")
        api_key = None
        if p.api_key_env:
            api_key = env.get(p.api_key_env)
            if not api_key:
                raise ConfigError(
                    f"{path}: provider {name!r} reads its API key from ${p.api_key_env}, which is not set"
                )
        try:
            extra = extra_fields(p.kind, p.extra_fields)
        except ValueError as exc:
            raise ConfigError(f"{path}: provider {name!r}: {exc}") from None
        providers.append(Provider(name, p.kind, base_url, api_key, p.connect_timeout, p.timeout, extra))
    known = {p.name for p in providers}
    models, seen = [], {ECHO_MODEL}
    for m in config.models:
        if m.id in seen:
            raise ConfigError(f"{path}: model {m.id!r} is declared twice")
        seen.add(m.id)
    for m in config.models:
        if len(m.aliases) > MAX_ALIASES:
            raise ConfigError(f"{path}: model {m.id!r} has {len(m.aliases)} aliases; at most {MAX_ALIASES}")
        for alias in m.aliases:
            if not ALIAS.fullmatch(alias):
                raise ConfigError(
                    f"{path}: model {m.id!r}: alias {alias[:80]!r} is not a model name a client sends: letters, "
                    "digits, '.', '_', ':', '-', no slash, at most 128 characters"
                )
            if alias in seen:
                raise ConfigError(f"{path}: alias {alias!r} of model {m.id!r} is already a model id or an alias")
            seen.add(alias)
        _check_fallbacks(path, m, {model.id for model in config.models})
        if m.provider not in known:
            raise ConfigError(f"{path}: model {m.id!r} uses provider {m.provider!r}, which is not declared")
        if m.prompt_usd_per_1k is None or m.completion_usd_per_1k is None:
            raise ConfigError(
                f"{path}: model {m.id!r} has no price; set prompt_usd_per_1k and "
                'completion_usd_per_1k ("0" for a free model)'
            )
        try:
            price = Price.from_usd(
                m.prompt_usd_per_1k, m.completion_usd_per_1k, m.cached_prompt_usd_per_1k, m.cache_write_usd_per_1k
            )
        except InvalidAmount as exc:
            raise ConfigError(f"{path}: model {m.id!r}: {exc}") from None
        kind = next(p.kind for p in providers if p.name == m.provider)
        max_output, context = _limits(path, m, kind)
        images = m.image_tokens if m.image_tokens is not None else image_tokens(kind, m.upstream, context)
        if images < 0:
            raise ConfigError(f"{path}: model {m.id!r}: image_tokens must not be negative")
        try:
            ignored = ignore_fields(m.ignore_fields)
        except ValueError as exc:
            raise ConfigError(f"{path}: model {m.id!r}: {exc}") from None
        models.append(
            Model(
                m.id,
                m.provider,
                m.upstream,
                price,
                m.enabled,
                max_output,
                context,
                images,
                tuple(m.aliases),
                ignored,
                tuple(m.fallbacks),
            )
        )
    return Catalog(providers, models)


def _check_fallbacks(path: Path, m: ModelConfig, ids: set[str]) -> None:
    if len(m.fallbacks) > MAX_FALLBACKS:
        raise ConfigError(f"{path}: model {m.id!r} has {len(m.fallbacks)} fallbacks; at most {MAX_FALLBACKS}")
    for fallback in m.fallbacks:
        if fallback == m.id:
            raise ConfigError(f"{path}: model {m.id!r} names itself as a fallback")
        if fallback not in ids:
            raise ConfigError(
                f"{path}: model {m.id!r}: fallback {fallback[:200]!r} is not a model id declared in this file"
            )
    if len(set(m.fallbacks)) != len(m.fallbacks):
        raise ConfigError(f"{path}: model {m.id!r} names a fallback twice")


def _limits(path: Path, m: ModelConfig, kind: str) -> tuple[int, int]:
    try:
        return resolved_limits(kind, m.upstream, m.max_output_tokens, m.context_tokens)
    except InvalidModel as exc:
        raise ConfigError(f"{path}: model {m.id!r}: {exc}") from None
