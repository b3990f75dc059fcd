"""Webhook endpoint use cases: each loads the account's endpoints, lets the aggregate decide, and saves."""

from __future__ import annotations

from uuid import UUID, uuid4

import msgspec
from eventsourcing.application import AggregateNotFoundError

from commands.app import MeshApplication
from domain.webhook import Webhooks, WebhookNotFound


class EndpointResult(msgspec.Struct, frozen=True):
    endpoint_id: UUID
    position: int


class WebhookCommands:
    def __init__(self, app: MeshApplication, allow_private: bool = False):
        self.app = app
        self.allow_private = allow_private  # MESH_WEBHOOK_ALLOW_PRIVATE

    def _webhooks(self, account_id: UUID, create: bool) -> Webhooks:
        try:
            webhooks = self.app.repository.get(Webhooks.create_id(account_id))
        except AggregateNotFoundError:
            if not create:
                raise WebhookNotFound("this account has no webhook endpoints") from None
            return Webhooks(account_id=account_id)
        assert isinstance(webhooks, Webhooks)
        return webhooks

    def add(
        self, account_id: UUID, url: str, events: list[str], threshold: int | None, description: str = ""
    ) -> EndpointResult:
        endpoint_id = uuid4()

        def use_case() -> EndpointResult:
            webhooks = self._webhooks(account_id, create=True)
            webhooks.add(endpoint_id, url, events, threshold, description, self.allow_private)
            return EndpointResult(endpoint_id, self.app.save_all(webhooks))

        return self.app.retrying(use_case)

    def update(
        self,
        account_id: UUID,
        endpoint_id: UUID,
        url: str,
        events: list[str],
        threshold: int | None,
        description: str,
    ) -> EndpointResult:
        def use_case() -> EndpointResult:
            webhooks = self._webhooks(account_id, create=False)
            webhooks.update(endpoint_id, url, events, threshold, description, self.allow_private)
            return EndpointResult(endpoint_id, self.app.save_all(webhooks))

        return self.app.retrying(use_case)

    def remove(self, account_id: UUID, endpoint_id: UUID) -> EndpointResult:
        def use_case() -> EndpointResult:
            webhooks = self._webhooks(account_id, create=False)
            webhooks.remove(endpoint_id)
            return EndpointResult(endpoint_id, self.app.save_all(webhooks))

        return self.app.retrying(use_case)

    def endpoint(self, account_id: UUID, endpoint_id: UUID):
        """The endpoint's settings as the log holds them (a PATCH changes some of them)."""
        return self._webhooks(account_id, create=False).endpoint(endpoint_id)
