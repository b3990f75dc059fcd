"""Webhook endpoints of an account: register (the signing secret shown once), change, remove, list; their
deliveries with every attempt, and a resend by hand."""

from __future__ import annotations

from urllib.parse import urlsplit
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.services.errors import Invalid, Missing
from api.services.read_your_writes import ReadModelWaiter
from api.webhook_delivery import Refused, checked_addresses
from commands.webhooks import WebhookCommands
from domain.money import usd_to_pico
from domain.webhook import check_url, endpoint_secret
from projections import webhooks
from projections.webhooks import WEBHOOKS

DELIVERY_PAGE = 50  # deliveries per page (default)
MAX_DELIVERY_PAGE = 200


class Created(msgspec.Struct):
    endpoint: webhooks.EndpointRow
    secret: str  # shown once: the receiver verifies Mesh-Signature with it


class WebhookService:
    def __init__(
        self,
        commands: WebhookCommands,
        pool: AsyncConnectionPool,
        waiter: ReadModelWaiter,
        signing_key: str,
        allow_private: bool,
    ):
        self.commands = commands
        self.pool = pool
        self.waiter = waiter
        self.signing_key = signing_key
        self.allow_private = allow_private  # MESH_WEBHOOK_ALLOW_PRIVATE

    async def _check_host(self, url: str) -> None:
        """The URL's rules, and where its host points now (checked again at every delivery)."""
        check_url(url, self.allow_private)
        parts = urlsplit(url)
        try:
            await checked_addresses(parts.hostname or "", parts.port or 443, self.allow_private)
        except Refused as exc:
            raise Invalid(f"url: {exc}", "invalid_webhook", param="url") from None

    async def create(
        self, account_id: UUID, url: str, events: list[str], threshold_usd=None, description: str = ""
    ) -> Created:
        threshold = _pico(threshold_usd)
        await self._check_host(url)
        result = await self.waiter.then_caught_up(
            WEBHOOKS, self.commands.add, account_id, url, events, threshold, description
        )
        endpoint = await self.one(account_id, result.endpoint_id)
        return Created(endpoint, endpoint_secret(self.signing_key, result.endpoint_id))

    async def update(self, account_id: UUID, endpoint_id: UUID, changes: dict) -> webhooks.EndpointRow:
        """`changes` holds only the fields to change (url, events, balance_low_threshold_usd, description)."""
        current = await self.one(account_id, endpoint_id)
        url = changes.get("url", current.url)
        events = changes.get("events", current.events)
        threshold = (
            _pico(changes["balance_low_threshold_usd"]) if "balance_low_threshold_usd" in changes else current.threshold
        )
        if "balance.low" not in events and "balance_low_threshold_usd" not in changes:
            threshold = None  # balance.low dropped: its threshold goes with it
        if url != current.url:
            await self._check_host(url)
        description = changes.get("description", current.description)
        await self.waiter.then_caught_up(
            WEBHOOKS, self.commands.update, account_id, endpoint_id, url, events, threshold, description
        )
        return await self.one(account_id, endpoint_id)

    async def remove(self, account_id: UUID, endpoint_id: UUID) -> None:
        await self.one(account_id, endpoint_id)
        await self.waiter.then_caught_up(WEBHOOKS, self.commands.remove, account_id, endpoint_id)

    async def listing(self, account_id: UUID) -> list[webhooks.EndpointRow]:
        async with self.pool.connection() as conn:
            return await webhooks.endpoints_of(conn, account_id)

    async def one(self, account_id: UUID, endpoint_id: UUID) -> webhooks.EndpointRow:
        async with self.pool.connection() as conn:
            row = await webhooks.endpoint_of(conn, account_id, endpoint_id)
        if row is None:
            raise Missing(f"no webhook endpoint {endpoint_id} in this account", "not_found")
        return row

    async def deliveries(
        self, account_id: UUID, endpoint_id: UUID, limit: int = DELIVERY_PAGE
    ) -> list[webhooks.DeliveryRow]:
        """The endpoint's newest deliveries, each with its attempts."""
        if not 1 <= limit <= MAX_DELIVERY_PAGE:
            raise Invalid(f"limit must be 1 to {MAX_DELIVERY_PAGE}; got {limit}", "invalid_request", param="limit")
        await self.one(account_id, endpoint_id)
        async with self.pool.connection() as conn:
            return await webhooks.deliveries_of(conn, endpoint_id, limit)

    async def resend(self, account_id: UUID, endpoint_id: UUID, delivery_id: UUID) -> webhooks.DeliveryRow:
        """Send the delivery again now (a new attempt, marked as by hand), whatever became of it."""
        await self.one(account_id, endpoint_id)
        async with self.pool.connection() as conn:
            if not await webhooks.resend(conn, endpoint_id, delivery_id):
                raise Missing(f"no delivery {delivery_id} of webhook endpoint {endpoint_id}", "not_found")
            return (await webhooks.deliveries_of(conn, endpoint_id, 1, delivery_id))[0]


def _pico(usd) -> int | None:
    return usd_to_pico(usd, field="balance_low_threshold_usd") if usd is not None else None
