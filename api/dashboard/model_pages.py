"""Models: the catalog this server offers, with prices."""

from __future__ import annotations

from uuid import UUID

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from api.dashboard.rendering import SessionPages, page
from api.services.models import ModelService


class ModelPages(SessionPages):
    @get("/models")
    async def models(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        model_service: NamedDependency[ModelService],
        free: FromQuery[bool] = False,
    ) -> Template:
        return page("models.html", request, section="models", models=model_service.enabled(free), free=free)
