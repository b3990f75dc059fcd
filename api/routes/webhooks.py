"""Webhook endpoints of the calling account, and their deliveries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import current_account
from api.openapi import ACCOUNT, errors
from api.security_headers import NO_STORE
from api.services.webhooks import DELIVERY_PAGE, WebhookService
from domain.bounds import MAX_LABEL_LENGTH, AmountIn, text
from domain.money import pico_to_usd
from domain.webhook import MAX_URL_LENGTH, WEBHOOK_EVENTS
from projections import webhooks

EventName = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]
Url = Annotated[str, text(MAX_URL_LENGTH, min_length=1)]
Events = Annotated[list[EventName], msgspec.Meta(min_length=1, max_length=len(WEBHOOK_EVENTS))]
Description = Annotated[str, text(MAX_LABEL_LENGTH)]


class EndpointIn(msgspec.Struct, forbid_unknown_fields=True):
    invalid_code: ClassVar[str] = "invalid_webhook"
    url: Url
    events: Events
    balance_low_threshold_usd: AmountIn | None = None  # balance.low fires when the balance falls below this
    description: Description = ""


class EndpointPatch(msgspec.Struct, forbid_unknown_fields=True):
    invalid_code: ClassVar[str] = "invalid_webhook"
    url: Url | msgspec.UnsetType = msgspec.UNSET
    events: Events | msgspec.UnsetType = msgspec.UNSET
    balance_low_threshold_usd: AmountIn | None | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class EndpointOut(msgspec.Struct):
    id: UUID
    url: str
    events: list[str]
    balance_low_threshold_usd: str | None
    description: str
    created_at: datetime
    updated_at: datetime


class CreatedEndpointOut(EndpointOut, kw_only=True):
    secret: str  # verifies Mesh-Signature: shown in this response only


class EndpointListOut(msgspec.Struct):
    data: list[EndpointOut]


class AttemptOut(msgspec.Struct):
    attempt: int
    at: datetime
    status_code: int | None  # null: no answer (refused address, timeout, connection error)
    latency_ms: int
    error: str | None
    manual: bool  # a resend by hand


class DeliveryOut(msgspec.Struct):
    id: UUID
    event_id: UUID  # the payload's id (header Mesh-Event-Id): the same on every attempt and resend
    event_type: str
    status: str  # pending | delivered | failed | cancelled
    attempts: list[AttemptOut]
    created_at: datetime
    next_attempt_at: datetime | None  # pending only
    retry_until: datetime
    delivered_at: datetime | None
    payload: str  # the JSON body sent


class DeliveryListOut(msgspec.Struct):
    data: list[DeliveryOut]  # newest first


def endpoint_out(row: webhooks.EndpointRow) -> EndpointOut:
    return EndpointOut(
        row.endpoint_id,
        row.url,
        row.events,
        pico_to_usd(row.threshold) if row.threshold is not None else None,
        row.description,
        row.created_at,
        row.updated_at,
    )


def delivery_out(row: webhooks.DeliveryRow) -> DeliveryOut:
    return DeliveryOut(
        row.delivery_id,
        row.event_id,
        row.event_type,
        row.status,
        [AttemptOut(a.attempt, a.at, a.status_code, a.latency_ms, a.error, a.manual) for a in row.attempt_log],
        row.created_at,
        row.next_attempt_at,
        row.retry_until,
        row.delivered_at,
        row.body,
    )


class WebhookController(Controller):
    path = "/api/webhooks"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201, cache_control=NO_STORE, responses=errors(400))
    async def create(
        self,
        webhook_service: NamedDependency[WebhookService],
        account_id: NamedDependency[UUID],
        data: JSONBody[EndpointIn],
    ) -> CreatedEndpointOut:
        created = await webhook_service.create(
            account_id, data.url, list(data.events), data.balance_low_threshold_usd, data.description
        )
        out = endpoint_out(created.endpoint)
        return CreatedEndpointOut(**msgspec.structs.asdict(out), secret=created.secret)

    @get("/")
    async def list_endpoints(
        self, webhook_service: NamedDependency[WebhookService], account_id: NamedDependency[UUID]
    ) -> EndpointListOut:
        return EndpointListOut([endpoint_out(r) for r in await webhook_service.listing(account_id)])

    @get("/{endpoint_id:uuid}", responses=errors(404))
    async def get_endpoint(
        self,
        webhook_service: NamedDependency[WebhookService],
        account_id: NamedDependency[UUID],
        endpoint_id: FromPath[UUID],
    ) -> EndpointOut:
        return endpoint_out(await webhook_service.one(account_id, endpoint_id))

    @patch("/{endpoint_id:uuid}", responses=errors(400, 404))
    async def update(
        self,
        webhook_service: NamedDependency[WebhookService],
        account_id: NamedDependency[UUID],
        endpoint_id: FromPath[UUID],
        data: JSONBody[EndpointPatch],
    ) -> EndpointOut:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not msgspec.UNSET}
        if "events" in changes:
            changes["events"] = list(changes["events"])
        return endpoint_out(await webhook_service.update(account_id, endpoint_id, changes))

    @delete("/{endpoint_id:uuid}", status_code=204, responses=errors(404))
    async def remove(
        self,
        webhook_service: NamedDependency[WebhookService],
        account_id: NamedDependency[UUID],
        endpoint_id: FromPath[UUID],
    ) -> None:
        await webhook_service.remove(account_id, endpoint_id)

    @get("/{endpoint_id:uuid}/deliveries", responses=errors(400, 404))
    async def deliveries(
        self,
        webhook_service: NamedDependency[WebhookService],
        account_id: NamedDependency[UUID],
        endpoint_id: FromPath[UUID],
        limit: FromQuery[int] = DELIVERY_PAGE,
    ) -> DeliveryListOut:
        rows = await webhook_service.deliveries(account_id, endpoint_id, limit)
        return DeliveryListOut([delivery_out(r) for r in rows])

    @post("/{endpoint_id:uuid}/deliveries/{delivery_id:uuid}/resend", status_code=202, responses=errors(404))
    async def resend(
        self,
        webhook_service: NamedDependency[WebhookService],
        account_id: NamedDependency[UUID],
        endpoint_id: FromPath[UUID],
        delivery_id: FromPath[UUID],
    ) -> DeliveryOut:
        return delivery_out(await webhook_service.resend(account_id, endpoint_id, delivery_id))
