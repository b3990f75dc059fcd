"""What a provider offers: its model list, read through the provider adapter's own upstream client (the same
pool, base URL and credentials as its requests), in each provider's wire format:

- OpenAI and OpenAI-compatible: `GET {base_url}/models` → `{"object": "list", "data": [{"id", "object": "model",
  "created", "owned_by"}]}`, one page; servers that publish a context length say it as `max_model_len` (vLLM)
  or `context_length`.
- Anthropic: `GET {base_url}/models?limit=&after_id=` → `{"data": [{"type": "model", "id", "display_name",
  "created_at", "max_input_tokens"?, "max_tokens"?}], "has_more", "first_id", "last_id"}`, paged by `after_id`.
- Gemini: `GET {base_url}/models?pageSize=&pageToken=` → `{"models": [{"name": "models/…", "displayName",
  "inputTokenLimit", "outputTokenLimit", "supportedGenerationMethods"}], "nextPageToken"}`.

Bounded: at most MAX_PAGES pages and MAX_MODELS models (the answer says when it was cut). Each model is marked
with the Mesh ids the catalog serves it under (mesh.toml models of this provider whose `upstream` it is).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.catalog import Catalog, Provider
from gateway.providers.base import Upstream

MAX_MODELS = 1000  # models listed at most
MAX_PAGES = 20  # pages asked for at most
PAGE_SIZE = 1000  # models asked for per page (Anthropic's and Gemini's largest)
LISTING_KINDS = ("openai", "openai-compatible", "anthropic", "gemini")
GEMINI_PREFIX = "models/"


class NotListable(ValueError):
    """The provider's kind has no model list (Mesh's own echo provider)."""


class OfferedModel(msgspec.Struct, frozen=True):
    id: str  # the provider's own name for it: what `upstream` names in mesh.toml
    display_name: str | None = None
    input_token_limit: int | None = None  # as the provider publishes them, when it does
    output_token_limit: int | None = None
    context_tokens: int | None = None  # prompt + completion (OpenAI-compatible servers that say it)
    mesh_ids: list[str] = []  # the catalog's models serving it from this provider
    enabled: bool = False  # one of them is enabled now


class Offer(msgspec.Struct, frozen=True):
    provider: str
    kind: str
    models: list[OfferedModel]
    truncated: bool = False  # the provider offers more than MAX_MODELS, or than MAX_PAGES pages hold


class _OpenAIModel(msgspec.Struct):
    id: str
    max_model_len: int | None = None
    context_length: int | None = None
    context_window: int | None = None


class _OpenAIList(msgspec.Struct):
    data: list[_OpenAIModel]


class _AnthropicModel(msgspec.Struct):
    id: str
    display_name: str | None = None
    max_input_tokens: int | None = None
    max_tokens: int | None = None


class _AnthropicPage(msgspec.Struct):
    data: list[_AnthropicModel]
    has_more: bool = False
    last_id: str | None = None


class _GeminiModel(msgspec.Struct):
    name: str
    displayName: str | None = None
    inputTokenLimit: int | None = None
    outputTokenLimit: int | None = None


class _GeminiPage(msgspec.Struct):
    models: list[_GeminiModel] = []
    nextPageToken: str | None = None


async def discover(provider: Provider, upstream: Upstream, catalog: Catalog) -> Offer:
    """The models `provider` offers, marked with what the catalog serves of them; a GatewayError naming the
    provider (never its key) when it cannot be asked or answers with an error."""
    if provider.kind not in LISTING_KINDS:
        raise NotListable(f"provider {provider.name!r} is of kind {provider.kind!r}, which has no model list")
    if provider.kind == "anthropic":
        found, truncated = await _anthropic(upstream)
    elif provider.kind == "gemini":
        found, truncated = await _gemini(upstream)
    else:
        found, truncated = await _openai(upstream)
    if len(found) > MAX_MODELS:
        found, truncated = found[:MAX_MODELS], True
    served: dict[str, list[Any]] = {}
    for model in catalog.models.values():
        if model.provider == provider.name:
            served.setdefault(model.upstream, []).append(model)
    marked = [
        msgspec.structs.replace(
            offered,
            mesh_ids=sorted(m.id for m in served.get(offered.id, [])),
            enabled=any(m.enabled for m in served.get(offered.id, [])),
        )
        for offered in found
    ]
    return Offer(provider.name, provider.kind, sorted(marked, key=lambda m: m.id), truncated)


def _decode(upstream: Upstream, content: bytes, shape: type) -> Any:
    try:
        return msgspec.json.decode(content, type=shape)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise upstream.broken("sent a model list Mesh cannot read") from None


async def _openai(upstream: Upstream) -> tuple[list[OfferedModel], bool]:
    listing = _decode(upstream, await upstream.get("/models"), _OpenAIList)
    return [
        OfferedModel(m.id, context_tokens=m.max_model_len or m.context_length or m.context_window) for m in listing.data
    ], False


async def _anthropic(upstream: Upstream) -> tuple[list[OfferedModel], bool]:
    found: list[OfferedModel] = []
    params: dict[str, Any] = {"limit": PAGE_SIZE}
    for _ in range(MAX_PAGES):
        page = _decode(upstream, await upstream.get("/models", params), _AnthropicPage)
        found += [OfferedModel(m.id, m.display_name, m.max_input_tokens, m.max_tokens) for m in page.data]
        if not page.has_more or not page.last_id or len(found) >= MAX_MODELS:
            return found, page.has_more
        params = {"limit": PAGE_SIZE, "after_id": page.last_id}
    return found, True


async def _gemini(upstream: Upstream) -> tuple[list[OfferedModel], bool]:
    found: list[OfferedModel] = []
    params: dict[str, Any] = {"pageSize": PAGE_SIZE}
    for _ in range(MAX_PAGES):
        page = _decode(upstream, await upstream.get("/models", params), _GeminiPage)
        found += [
            OfferedModel(m.name.removeprefix(GEMINI_PREFIX), m.displayName, m.inputTokenLimit, m.outputTokenLimit)
            for m in page.models
        ]
        if not page.nextPageToken or len(found) >= MAX_MODELS:
            return found, bool(page.nextPageToken)
        params = {"pageSize": PAGE_SIZE, "pageToken": page.nextPageToken}
    return found, True
