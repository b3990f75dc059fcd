"""Webhooks: the account's endpoints (the signing secret shown once after creation), one endpoint with its
deliveries and every attempt, a resend by hand, and removal."""

from __future__ import annotations

from uuid import UUID

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.dashboard.rendering import PAGE_ERRORS, SessionPages, failure, page
from api.services.one_time_views import OneTimeViews
from api.services.webhooks import WebhookService
from domain.webhook import WEBHOOK_EVENTS


class WebhookPages(SessionPages):
    @get("/webhooks")
    async def webhooks(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        webhook_service: NamedDependency[WebhookService],
        one_time_views: NamedDependency[OneTimeViews],
        created: FromQuery[str | None] = None,
    ) -> Template:
        """`created`: the one-time view of an endpoint just made (its secret, shown on this one page)."""
        shown = await one_time_views.take(account_id, request.state.session_token, created) if created else None
        return await self._list(
            request,
            account_id,
            webhook_service,
            secret=shown["secret"] if shown else None,
            created=shown["endpoint_id"] if shown else None,
            secret_gone=created is not None and shown is None,
        )

    @post("/webhooks")
    async def create(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        webhook_service: NamedDependency[WebhookService],
        one_time_views: NamedDependency[OneTimeViews],
    ) -> Response:
        form = await request.form()
        try:
            made = await webhook_service.create(
                account_id,
                form.get("url", ""),
                [name for name in form.getall("events", []) if name],
                form.get("balance_low_threshold_usd") or None,
                form.get("description", ""),
            )
        except PAGE_ERRORS as exc:
            return await self._list(request, account_id, webhook_service, error=failure(exc), form=dict(form))
        view = await one_time_views.put(
            account_id,
            request.state.session_token,
            {"endpoint_id": str(made.endpoint.endpoint_id), "secret": made.secret},
        )
        return Redirect(f"/webhooks?created={view}", status_code=HTTP_303_SEE_OTHER)

    async def _list(self, request, account_id, webhook_service, **extra) -> Template:
        endpoints = await webhook_service.listing(account_id)
        return page(
            "webhooks.html",
            request,
            section="webhooks",
            endpoints=endpoints,
            event_names=WEBHOOK_EVENTS,
            **{"error": None, "form": {}, "secret": None, "created": None, "secret_gone": False, **extra},
        )

    @get("/webhooks/{endpoint_id:uuid}")
    async def endpoint(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        webhook_service: NamedDependency[WebhookService],
        endpoint_id: FromPath[UUID],
    ) -> Template:
        endpoint = await webhook_service.one(account_id, endpoint_id)
        deliveries = await webhook_service.deliveries(account_id, endpoint_id)
        return page("webhook.html", request, section="webhooks", endpoint=endpoint, deliveries=deliveries)

    @post("/webhooks/{endpoint_id:uuid}/remove")
    async def remove(
        self,
        account_id: NamedDependency[UUID],
        webhook_service: NamedDependency[WebhookService],
        endpoint_id: FromPath[UUID],
    ) -> Response:
        await webhook_service.remove(account_id, endpoint_id)
        return Redirect("/webhooks", status_code=HTTP_303_SEE_OTHER)

    @post("/webhooks/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/resend")
    async def resend(
        self,
        account_id: NamedDependency[UUID],
        webhook_service: NamedDependency[WebhookService],
        endpoint_id: FromPath[UUID],
        delivery_id: FromPath[UUID],
    ) -> Response:
        await webhook_service.resend(account_id, endpoint_id, delivery_id)
        return Redirect(f"/webhooks/{endpoint_id}", status_code=HTTP_303_SEE_OTHER)
