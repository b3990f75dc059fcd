"""API key use cases: each loads the key, lets the aggregate decide, and saves."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from commands.app import MeshApplication, NotFound, holdings_of
from domain.apikey import ApiKey
from domain.credentials import new_api_key
from domain.quota import Quotas

UNSET: Any = msgspec.UNSET


class KeyResult(msgspec.Struct, frozen=True):
    key: ApiKey
    position: int
    secret: str | None = None  # plain text, only after create and rotate


class KeyChanges(msgspec.Struct, frozen=True):
    """What a PATCH may change; UNSET fields stay as they are."""

    label: Any = UNSET
    spend_cap: Any = UNSET  # int | None
    cap_reset: Any = UNSET  # str | None
    default_model: Any = UNSET
    allowed_models: Any = UNSET
    expires_at: Any = UNSET
    fit_to_budget: Any = UNSET  # bool
    rpm_limit: Any = UNSET  # int | None
    tpm_limit: Any = UNSET  # int | None


class KeyCommands:
    def __init__(self, app: MeshApplication, quotas: Quotas = Quotas()):
        self.app = app
        self.quotas = quotas

    def create(
        self,
        account_id: UUID,
        label: str,
        spend_cap: int | None,
        default_model: str | None,
        allowed_models: list[str] | None = None,
        expires_at: datetime | None = None,
        cap_reset: str | None = None,
        fit_to_budget: bool = False,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
    ) -> KeyResult:
        secret = new_api_key()

        def use_case() -> KeyResult:  # a concurrent create changed the holdings: counted again
            self.app.account(account_id).check_active()  # a suspended account makes no keys
            key = ApiKey.create(
                account_id,
                label,
                secret.hash,
                secret.prefix,
                spend_cap,
                default_model,
                allowed_models,
                expires_at,
                cap_reset,
                fit_to_budget,
                rpm_limit,
                tpm_limit,
            )
            holdings = holdings_of(self.app, account_id)
            holdings.add_key(key.id, self.quotas.keys)
            return KeyResult(key, self.app.save_all(holdings, key), secret.plain)  # the key last: its position

        return self.app.retrying(use_case)

    def update(self, account_id: UUID, key_id: UUID, changes: KeyChanges) -> KeyResult:
        def decide(key: ApiKey) -> None:
            if changes.label is not UNSET:
                key.relabel(changes.label)
            if changes.spend_cap is not UNSET or changes.cap_reset is not UNSET:
                key.change_spend_cap(
                    key.spend_cap if changes.spend_cap is UNSET else changes.spend_cap,
                    key.cap_reset if changes.cap_reset is UNSET else changes.cap_reset,
                )
            if changes.default_model is not UNSET:
                key.change_default_model(changes.default_model)
            if changes.allowed_models is not UNSET:
                key.change_allowed_models(changes.allowed_models)
            if changes.expires_at is not UNSET:
                key.change_expiry(changes.expires_at)
            if changes.fit_to_budget is not UNSET:
                key.change_fit_to_budget(changes.fit_to_budget)
            if changes.rpm_limit is not UNSET or changes.tpm_limit is not UNSET:
                key.change_rate_limits(
                    key.rpm_limit if changes.rpm_limit is UNSET else changes.rpm_limit,
                    key.tpm_limit if changes.tpm_limit is UNSET else changes.tpm_limit,
                )

        return self._change(account_id, key_id, decide)

    def disable(self, account_id: UUID, key_id: UUID, by: str) -> KeyResult:
        return self._change(account_id, key_id, lambda key: key.disable(by))

    def enable(self, account_id: UUID, key_id: UUID, by: str) -> KeyResult:
        return self._change(account_id, key_id, lambda key: key.enable(by))

    def revoke(self, account_id: UUID, key_id: UUID, by: str) -> KeyResult:
        """Revoked for good; its place in the account's key quota is free again."""

        def use_case() -> KeyResult:
            key = self._load(account_id, key_id)
            key.revoke(by)
            if not key.pending_events:
                return KeyResult(key, 0)
            holdings = holdings_of(self.app, account_id)
            holdings.remove_key(key_id)
            return KeyResult(key, self.app.save_all(key, *([holdings] if holdings.pending_events else [])))

        return self.app.retrying(use_case)

    def rotate(self, account_id: UUID, key_id: UUID, grace: timedelta) -> KeyResult:
        secret = new_api_key()
        result = self._change(
            account_id, key_id, lambda key: key.rotate(secret.hash, secret.prefix, datetime.now(timezone.utc), grace)
        )
        return KeyResult(result.key, result.position, secret.plain)

    def _change(self, account_id: UUID, key_id: UUID, decide: Callable[[ApiKey], None]) -> KeyResult:
        def use_case() -> KeyResult:
            key = self._load(account_id, key_id)
            decide(key)
            position = self.app.save_all(key) if key.pending_events else 0
            return KeyResult(key, position)

        return self.app.retrying(use_case)

    def _load(self, account_id: UUID, key_id: UUID) -> ApiKey:
        try:
            key = self.app.repository.get(key_id)
        except AggregateNotFoundError:
            key = None
        if not isinstance(key, ApiKey) or key.account_id != account_id:
            raise NotFound(f"no API key {key_id} in this account")
        return key
