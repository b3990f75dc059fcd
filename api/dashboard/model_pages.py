"""Models: the catalog this server offers, with prices."""

from __future__ import annotations

from uuid import UUID

from litestar import Request, get
from litestar.di import NamedDependency
from litestar.params import FromQuery
from litestar.response import Template

from api.dashboard.rendering import SessionPages, page
from api.dashboard.time_ranges import instant
from api.services.models import ModelService


class ModelPages(SessionPages):
    @get("/models")
    async def models(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        model_service: NamedDependency[ModelService],
        free: FromQuery[bool] = False,
        at: FromQuery[str] = "",
    ) -> Template:
        """Now, or with `at` (the form's date and time, UTC) the models and prices in force then."""
        if not at:
            return page("models.html", request, section="models", models=model_service.enabled(free), free=free)
        try:
            moment = instant(at)
        except ValueError:
            error = f"“{at[:40]}” is not a date and time; pick one, or clear the field for today's prices"
            return page("models.html", request, section="models", models=[], free=free, at=at, at_error=error)
        models = await model_service.enabled_at(moment, free)
        return page("models.html", request, section="models", models=models, free=free, at=at, moment=moment)
