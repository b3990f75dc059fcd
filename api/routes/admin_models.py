"""Operator routes on the model catalog: the models served, what a provider offers, models added at runtime, and
their prices and switches (the operator token, or an operator's management token: api/routes/admin_accounts.py)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.auth import OperatorController
from api.openapi import errors
from api.routes.models import ModelListOut, ModelOut, model_out
from api.services.admin import PRICE_FIELDS, AdminService
from api.services.provider_models import ProviderModelService
from domain.bounds import MAX_MODEL_ID_LENGTH, MAX_REFERENCE_LENGTH, AmountIn
from domain.bounds import text
from domain.catalog import MAX_TOKEN_LIMIT, MAX_UPSTREAM_LENGTH
from gateway.discovery import Offer


TokenLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_TOKEN_LIMIT)]


class ModelChangeIn(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool | None = None
    prompt_usd_per_1k: AmountIn | None = None
    completion_usd_per_1k: AmountIn | None = None
    cached_prompt_usd_per_1k: AmountIn | None = None
    cache_write_usd_per_1k: AmountIn | None = None


class ModelAddIn(msgspec.Struct, forbid_unknown_fields=True):
    id: Annotated[str, text(MAX_MODEL_ID_LENGTH, min_length=1)]  # what clients will send as "model"
    provider: Annotated[str, text(MAX_REFERENCE_LENGTH, min_length=1)]  # a provider of mesh.toml
    upstream: Annotated[str, text(MAX_UPSTREAM_LENGTH, min_length=1)]  # the provider's own model name
    prompt_usd_per_1k: AmountIn  # "0" for a free model
    completion_usd_per_1k: AmountIn
    cached_prompt_usd_per_1k: AmountIn | None = None  # default: the prompt price
    cache_write_usd_per_1k: AmountIn | None = None  # default: the prompt price
    max_output_tokens: TokenLimit | None = None  # default: as for a model of mesh.toml (by provider and name)
    context_tokens: TokenLimit | None = None


class AdminModelController(OperatorController):
    """The catalog: models, their prices and switches, and what providers offer."""

    @get("/models")
    async def models(self, admin_service: NamedDependency[AdminService], acting: NamedDependency[str]) -> ModelListOut:
        return ModelListOut([model_out(m) for m in admin_service.models()])

    @get("/providers/{name:str}/models", responses=errors(400, 404, 502))
    async def provider_models(
        self,
        provider_model_service: NamedDependency[ProviderModelService],
        acting: NamedDependency[str],
        name: FromPath[str],
    ) -> Offer:
        """What the provider offers (its own model list, through Mesh's credentials for it), each marked with the
        Mesh ids the catalog serves it under and its published token limits; at most MAX_MODELS models."""
        return await provider_model_service.offered(name)

    @post("/models", status_code=201, responses=errors(400, 409, 503))
    async def add_model(
        self, admin_service: NamedDependency[AdminService], acting: NamedDependency[str], data: JSONBody[ModelAddIn]
    ) -> ModelOut:
        """Serve a model of a mesh.toml provider (one `GET /admin/providers/{name}/models` lists, say) under a new
        id at a price: every gateway process serves it from now on, and after a restart. Switch it off with
        `PUT /admin/models/{id}`."""
        prices = {name: getattr(data, name) for name in PRICE_FIELDS}
        return model_out(
            await admin_service.add_model(
                data.id, data.provider, data.upstream, prices, data.max_output_tokens, data.context_tokens, acting
            )
        )

    @put("/models/{model_id:path}", responses=errors(400, 404, 503))
    async def change_model(
        self,
        admin_service: NamedDependency[AdminService],
        acting: NamedDependency[str],
        model_id: FromPath[str],
        data: JSONBody[ModelChangeIn],
    ) -> ModelOut:
        """Change a model's price and/or switch it on or off; requests that start afterwards see it."""
        given = {name: getattr(data, name) for name in PRICE_FIELDS if getattr(data, name) is not None}
        return model_out(await admin_service.change_model(model_id.lstrip("/"), given, data.enabled, acting))
