"""API keys: what a customer's app uses to call /v1/*. The secret itself is never stored.

A key is active until it is disabled (reversible), revoked (final) or past its
expiry. Rotation replaces the secret; the old one can keep working for a
grace period so deployed apps can switch over.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Callable
from uuid import UUID

import msgspec
from eventsourcing.domain import Aggregate, event

from domain.key_settings import (
    MAX_ROTATION_GRACE,
    InvalidKeySettings,
    check_allowed_models,
    check_cap_has_amount,
    check_cap_period,
    check_expiry,
    check_label,
    check_model_id,
    check_rate_limits,
    check_spend_cap,
)
from domain.leases import (
    BudgetExceeded,
    ExtendsLease,
    GrantsLease,
    LeaseBook,
    LeaseHolder,
    SettlesLease,
    period_start,
)


class KeyRevoked(ValueError):
    """A revoked key is final: it cannot be changed, enabled or rotated."""


class ApiKey(LeaseHolder, Aggregate):
    class Created(Aggregate.Created):
        account_id: UUID
        label: str
        key_hash: str
        prefix: str
        spend_cap: int | None  # pico-USD, None = no cap beyond the account balance
        default_model: str | None
        allowed_models: list[str] | None = None  # None = every enabled model
        expires_at: datetime | None = None
        cap_reset: str | None = None  # daily | weekly | monthly (UTC), None = the cap is for all time
        fit_to_budget: bool = False  # see FitToBudgetChanged
        rpm_limit: int | None = None  # see RateLimitsChanged
        tpm_limit: int | None = None

    class Relabeled(Aggregate.Event):
        label: str

    class SpendCapChanged(Aggregate.Event):
        spend_cap: int | None
        cap_reset: str | None = None

    class DefaultModelChanged(Aggregate.Event):
        default_model: str | None

    class AllowedModelsChanged(Aggregate.Event):
        allowed_models: list[str] | None

    class ExpiryChanged(Aggregate.Event):
        expires_at: datetime | None

    class Disabled(Aggregate.Event):
        by: str

    class Enabled(Aggregate.Event):
        by: str

    class Revoked(Aggregate.Event):
        by: str

    class BudgetLeased(GrantsLease, Aggregate.Event):
        lease_id: UUID
        amount: int
        expires_at: datetime

    class LeaseSettled(SettlesLease, Aggregate.Event):
        lease_id: UUID
        spent: int

    class LeaseExtended(ExtendsLease, Aggregate.Event):
        """The lease's holder still has requests running on it: it expires later."""

        lease_id: UUID
        expires_at: datetime

    class SpendPeriodStarted(Aggregate.Event):
        """A periodic cap starts afresh: spend settled before this no longer counts against it."""

        period_start: datetime

    class FitToBudgetChanged(Aggregate.Event):
        """Whether a request the budget cannot cover gets its completion limit fitted to what is left (the
        answer then says so) instead of a 402."""

        fit_to_budget: bool

    class RateLimitsChanged(Aggregate.Event):
        """At most `rpm_limit` requests and `tpm_limit` tokens (prompt and completion) a UTC minute; None: no
        limit (enforced by the gateway, gateway/key_rate.py)."""

        rpm_limit: int | None = None
        tpm_limit: int | None = None

    class Rotated(Aggregate.Event):
        key_hash: str
        prefix: str
        previous_hash: str
        previous_valid_until: datetime  # the old secret works until then (== rotation time: stops at once)

    @classmethod
    def create(
        cls,
        account_id: UUID,
        label: str,
        key_hash: str,
        prefix: str,
        spend_cap: int | None,
        default_model: str | None,
        allowed_models: list[str] | None = None,
        expires_at: datetime | None = None,
        cap_reset: str | None = None,
        fit_to_budget: bool = False,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
    ) -> ApiKey:
        """A new key, its settings checked (the constructor records them as given)."""
        check_cap_has_amount(spend_cap, cap_reset)
        rpm_limit, tpm_limit = check_rate_limits(rpm_limit, tpm_limit)
        return cls(
            account_id=account_id,
            label=check_label(label),
            key_hash=key_hash,
            prefix=prefix,
            spend_cap=check_spend_cap(spend_cap),
            default_model=check_model_id(default_model),
            allowed_models=check_allowed_models(allowed_models),
            expires_at=check_expiry(expires_at),
            cap_reset=check_cap_period(cap_reset),
            fit_to_budget=fit_to_budget,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
        )

    @event(Created)
    def __init__(
        self,
        account_id: UUID,
        label: str,
        key_hash: str,
        prefix: str,
        spend_cap: int | None,
        default_model: str | None,
        allowed_models: list[str] | None = None,
        expires_at: datetime | None = None,
        cap_reset: str | None = None,
        fit_to_budget: bool = False,
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
    ):
        self.account_id = account_id
        self.label = label
        self.key_hash = key_hash
        self.prefix = prefix
        self.spend_cap = spend_cap
        self.default_model = default_model
        self.allowed_models = allowed_models
        self.expires_at = expires_at
        self.cap_reset = cap_reset
        self.fit_to_budget = fit_to_budget
        self.rpm_limit = rpm_limit
        self.tpm_limit = tpm_limit
        self.disabled = False
        self.revoked = False
        self.leases = LeaseBook()
        self.period: datetime | None = None

    @property
    def leasable(self) -> int | None:
        """What the cap still allows (None: no cap)."""
        return None if self.spend_cap is None else self.spend_cap - self.spent_and_reserved

    def usable_at(self, now: datetime) -> str | None:
        """Why the key cannot be used now (key_revoked, key_disabled, key_expired), or None."""
        return unusable(self.revoked, self.disabled, self.expires_at, now)

    def start_period_if_due(self, now: datetime) -> None:
        start = period_start(self.cap_reset, now)
        if start is not None and start != self.period:
            self._start_period(start)

    @event(SpendPeriodStarted)
    def _start_period(self, period_start: datetime) -> None:
        self.period = period_start
        self.leases.settled = 0

    def lease(self, lease_id: UUID, amount: int, expires_at: datetime, now: datetime) -> None:
        refusal = self.usable_at(now)
        if refusal is not None:
            raise BudgetExceeded(refusal, f"this API key is {refusal.removeprefix('key_')}")
        self._grant_lease("key_spend_cap", lease_id, amount, expires_at)

    @property
    def status(self) -> str:
        return "revoked" if self.revoked else "disabled" if self.disabled else "active"

    def _check_not_revoked(self) -> None:
        if self.revoked:
            raise KeyRevoked(f"API key {self.id} is revoked; revoked keys cannot be changed")

    def relabel(self, label: str) -> None:
        self._check_not_revoked()
        label = check_label(label)
        if label != self.label:
            self._relabel(label)

    @event(Relabeled)
    def _relabel(self, label: str) -> None:
        self.label = label

    def change_spend_cap(self, spend_cap: int | None, cap_reset: str | None) -> None:
        self._check_not_revoked()
        spend_cap, cap_reset = check_spend_cap(spend_cap), check_cap_period(cap_reset)
        check_cap_has_amount(spend_cap, cap_reset)
        if (spend_cap, cap_reset) != (self.spend_cap, self.cap_reset):
            self._change_spend_cap(spend_cap, cap_reset)

    @event(SpendCapChanged)
    def _change_spend_cap(self, spend_cap: int | None, cap_reset: str | None) -> None:
        self.spend_cap = spend_cap
        self.cap_reset = cap_reset

    def change_default_model(self, default_model: str | None) -> None:
        self._check_not_revoked()
        default_model = check_model_id(default_model)
        if default_model != self.default_model:
            self._change_default_model(default_model)

    @event(DefaultModelChanged)
    def _change_default_model(self, default_model: str | None) -> None:
        self.default_model = default_model

    def change_allowed_models(self, allowed_models: list[str] | None) -> None:
        self._check_not_revoked()
        allowed_models = check_allowed_models(allowed_models)
        if allowed_models != self.allowed_models:
            self._change_allowed_models(allowed_models)

    @event(AllowedModelsChanged)
    def _change_allowed_models(self, allowed_models: list[str] | None) -> None:
        self.allowed_models = allowed_models

    def change_fit_to_budget(self, fit_to_budget: bool) -> None:
        self._check_not_revoked()
        if fit_to_budget != self.fit_to_budget:
            self._change_fit_to_budget(fit_to_budget)

    @event(FitToBudgetChanged)
    def _change_fit_to_budget(self, fit_to_budget: bool) -> None:
        self.fit_to_budget = fit_to_budget

    def change_rate_limits(self, rpm_limit: int | None, tpm_limit: int | None) -> None:
        self._check_not_revoked()
        rpm_limit, tpm_limit = check_rate_limits(rpm_limit, tpm_limit)
        if (rpm_limit, tpm_limit) != (self.rpm_limit, self.tpm_limit):
            self._change_rate_limits(rpm_limit, tpm_limit)

    @event(RateLimitsChanged)
    def _change_rate_limits(self, rpm_limit: int | None, tpm_limit: int | None) -> None:
        self.rpm_limit = rpm_limit
        self.tpm_limit = tpm_limit

    def change_expiry(self, expires_at: datetime | None) -> None:
        self._check_not_revoked()
        expires_at = check_expiry(expires_at)
        if expires_at != self.expires_at:
            self._change_expiry(expires_at)

    @event(ExpiryChanged)
    def _change_expiry(self, expires_at: datetime | None) -> None:
        self.expires_at = expires_at

    def disable(self, by: str) -> None:
        self._check_not_revoked()
        if not self.disabled:
            self._disable(by)

    @event(Disabled)
    def _disable(self, by: str) -> None:
        self.disabled = True

    def enable(self, by: str) -> None:
        self._check_not_revoked()
        if self.disabled:
            self._enable(by)

    @event(Enabled)
    def _enable(self, by: str) -> None:
        self.disabled = False

    def revoke(self, by: str) -> None:
        if not self.revoked:
            self._revoke(by)

    @event(Revoked)
    def _revoke(self, by: str) -> None:
        self.revoked = True

    def rotate(self, key_hash: str, prefix: str, now: datetime, grace: timedelta) -> None:
        self._check_not_revoked()
        if grace < timedelta(0) or grace > MAX_ROTATION_GRACE:
            raise InvalidKeySettings(f"grace period must be 0 to {MAX_ROTATION_GRACE.days} days")
        self._rotate(key_hash, prefix, self.key_hash, now + grace)

    @event(Rotated)
    def _rotate(self, key_hash: str, prefix: str, previous_hash: str, previous_valid_until: datetime) -> None:
        self.key_hash = key_hash
        self.prefix = prefix


class ApiKeyState(msgspec.Struct, forbid_unknown_fields=True):
    """Every attribute an ApiKey holds, typed: what its snapshot stores (commands/snapshots.py). An attribute
    added to ApiKey is added here too (tests/unit/test_snapshots.py fails until it is)."""

    _created_on: datetime
    _modified_on: datetime
    account_id: UUID
    label: str
    key_hash: str
    prefix: str
    spend_cap: int | None
    default_model: str | None
    allowed_models: list[str] | None
    expires_at: datetime | None
    cap_reset: str | None
    fit_to_budget: bool
    disabled: bool
    revoked: bool
    leases: LeaseBook
    period: datetime | None
    rpm_limit: int | None = None
    tpm_limit: int | None = None


def unusable(revoked: bool, disabled: bool, expires_at: datetime | None, now: datetime) -> str | None:
    """Why a key cannot be used at `now`, as its error code (key_revoked, key_disabled, key_expired), or None.
    The one rule for the commands (ApiKey.usable_at) and the gateway (KeyInfo.refusal)."""
    if revoked:
        return "key_revoked"
    if disabled:
        return "key_disabled"
    if expires_at is not None and now >= expires_at:
        return "key_expired"
    return None


# What each key event changes of a key, field by field: the one table behind every view of keys (the
# directory's rows, the gateway's cache), each keeping the fields it holds. `status` is active | disabled | revoked.
KEY_CHANGES: dict[type, Callable[[Any], dict[str, Any]]] = {
    ApiKey.Relabeled: lambda e: {"label": e.label},
    ApiKey.SpendCapChanged: lambda e: {"spend_cap": e.spend_cap, "cap_reset": e.cap_reset},
    ApiKey.DefaultModelChanged: lambda e: {"default_model": e.default_model},
    ApiKey.AllowedModelsChanged: lambda e: {"allowed_models": e.allowed_models},
    ApiKey.ExpiryChanged: lambda e: {"expires_at": e.expires_at},
    ApiKey.FitToBudgetChanged: lambda e: {"fit_to_budget": e.fit_to_budget},
    ApiKey.RateLimitsChanged: lambda e: {"rpm_limit": e.rpm_limit, "tpm_limit": e.tpm_limit},
    ApiKey.Disabled: lambda e: {"status": "disabled"},
    ApiKey.Enabled: lambda e: {"status": "active"},
    ApiKey.Revoked: lambda e: {"status": "revoked"},
}
