"""Models and their prices, now or at a past instant."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID


import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery

from api.openapi import ACCOUNT, errors
from api.auth import current_account
from api.services.models import ModelService
from gateway.catalog import Model


class ModelOut(msgspec.Struct):
    id: str
    provider: str
    prompt_usd_per_1k: str
    completion_usd_per_1k: str
    cached_prompt_usd_per_1k: str  # prompt tokens read from the provider's cache
    cache_write_usd_per_1k: str  # prompt tokens written to the provider's cache
    free: bool
    enabled: bool
    max_output_tokens: int = 0  # the most completion tokens a request may ask for (max_tokens)
    context_tokens: int = 0  # prompt and completion together
    aliases: list[str] = []  # other names a request may give it as `model` (mesh.toml `aliases`)


class ModelListOut(msgspec.Struct):
    data: list[ModelOut]


def model_out(model: Model) -> ModelOut:
    return ModelOut(
        model.id,
        model.provider,
        **model.price.as_usd(),
        free=model.price.is_free,
        enabled=model.enabled,
        max_output_tokens=model.max_output_tokens,
        context_tokens=model.context_tokens,
        aliases=list(model.aliases),
    )


class ModelController(Controller):
    path = "/api/models"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @get("/", responses=errors(400))
    async def list_models(
        self,
        model_service: NamedDependency[ModelService],
        account_id: NamedDependency[UUID],
        free: FromQuery[bool] = False,
        at: FromQuery[datetime | None] = None,
    ) -> ModelListOut:
        """The enabled models and their prices now, or at a past instant (`?at=` an ISO 8601 time with a zone:
        the operator's price changes and switches in force then, on top of mesh.toml as it is now)."""
        models = model_service.enabled(free) if at is None else await model_service.enabled_at(at, free)
        return ModelListOut([model_out(m) for m in models])
