"""API keys of the calling account."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, get, patch, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from api.openapi import ACCOUNT, errors
from api.auth import current_account
from api.services.as_of import AsOf
from api.security_headers import NO_STORE
from api.services.keys import HISTORY_PAGE, KeyService, KeyView, error_rate
from domain.apikey import ApiKey
from domain.key_settings import CAP_PERIODS, MAX_ROTATION_GRACE, MAX_RPM_LIMIT, MAX_TPM_LIMIT
from domain.bounds import AmountIn, AwareDatetime, Label, ModelId, ModelIds
from domain.money import pico_to_usd
from projections import billing, directory


CapPeriod = Literal[CAP_PERIODS]  # type: ignore[valid-type]
RpmLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_RPM_LIMIT)]  # requests a UTC minute
TpmLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_TPM_LIMIT)]  # tokens a UTC minute


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    invalid_code: ClassVar[str] = (
        "invalid_key_settings"  # a refused field's code (api/input_errors.py), as the domain's
    )
    label: Label
    spend_cap_usd: AmountIn | None = None
    cap_reset: CapPeriod | None = None
    default_model: ModelId | None = None
    allowed_models: ModelIds | None = None
    expires_at: AwareDatetime | None = None
    fit_to_budget: bool = False  # fit a request's limit to what is left instead of refusing it (402)
    rpm_limit: RpmLimit | None = None  # requests a UTC minute; null: no limit
    tpm_limit: TpmLimit | None = None  # tokens (prompt and completion) a UTC minute; null: no limit


class KeyPatch(msgspec.Struct, forbid_unknown_fields=True):
    invalid_code: ClassVar[str] = "invalid_key_settings"
    label: Label | msgspec.UnsetType = msgspec.UNSET
    spend_cap_usd: AmountIn | None | msgspec.UnsetType = msgspec.UNSET
    cap_reset: CapPeriod | None | msgspec.UnsetType = msgspec.UNSET
    default_model: ModelId | None | msgspec.UnsetType = msgspec.UNSET
    allowed_models: ModelIds | None | msgspec.UnsetType = msgspec.UNSET
    expires_at: AwareDatetime | None | msgspec.UnsetType = msgspec.UNSET
    fit_to_budget: bool | msgspec.UnsetType = msgspec.UNSET
    rpm_limit: RpmLimit | None | msgspec.UnsetType = msgspec.UNSET
    tpm_limit: TpmLimit | None | msgspec.UnsetType = msgspec.UNSET


GraceSeconds = Annotated[int, msgspec.Meta(ge=0, le=int(MAX_ROTATION_GRACE.total_seconds()))]


class RotateIn(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: GraceSeconds = 0  # how long the old secret keeps working; 0 = it stops at once


class StatsOut(msgspec.Struct):
    requests: int
    successes: int
    errors: int
    error_rate: float  # errors / requests, 0 when there were none
    prompt_tokens: int
    completion_tokens: int
    spend_usd: str
    refused: int = 0  # requests refused before reaching a model (not in `requests`): they cost nothing
    refused_by_code: dict[str, int] = {}  # the same, by error code, such as key_spend_cap

    @classmethod
    def of(cls, s: billing.KeyStats) -> "StatsOut":
        return cls(
            s.requests,
            s.requests - s.errors,
            s.errors,
            error_rate(s),
            s.prompt_tokens,
            s.completion_tokens,
            pico_to_usd(s.spend),
            s.refused_total,
            dict(s.refused),
        )


class KeyOut(msgspec.Struct):
    id: UUID
    label: str
    prefix: str
    status: str
    spend_cap_usd: str | None
    cap_reset: str | None
    default_model: str | None
    allowed_models: list[str] | None
    expires_at: datetime | None
    created_at: datetime
    spend_usd: str = "0.000000"  # all time
    stats: StatsOut | None = None  # all time
    window: StatsOut | None = None  # over ?from=&to=, when asked
    as_of: AsOf | None = None
    fit_to_budget: bool = False
    last_used_at: datetime | None = None  # the key's newest request; null until it makes one
    rpm_limit: int | None = None  # requests a UTC minute; null: no limit
    tpm_limit: int | None = None  # tokens a UTC minute; null: no limit


class CreatedKeyOut(KeyOut, kw_only=True):
    key: str  # the secret: shown in this response only


class KeyListOut(msgspec.Struct):
    data: list[KeyOut]
    as_of: AsOf


def _usd(pico: int | None) -> str | None:
    return pico_to_usd(pico) if pico is not None else None


def key_out(
    row: directory.KeyRow, stats: billing.KeyStats | None = None, window: billing.KeyStats | None = None
) -> KeyOut:
    totals = stats or billing.KeyStats()
    return KeyOut(
        row.key_id,
        row.label,
        row.prefix,
        row.status,
        _usd(row.spend_cap),
        row.cap_reset,
        row.default_model,
        row.allowed_models,
        row.expires_at,
        row.created_at,
        pico_to_usd(totals.spend),
        StatsOut.of(totals),
        StatsOut.of(window or billing.KeyStats()) if window is not None else None,
        fit_to_budget=row.fit_to_budget,
        last_used_at=totals.last_used,
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
    )


def aggregate_out(key: ApiKey, secret: str | None = None) -> KeyOut:
    fields = (
        key.id,
        key.label,
        key.prefix,
        key.status,
        _usd(key.spend_cap),
        key.cap_reset,
        key.default_model,
        key.allowed_models,
        key.expires_at,
        key.created_on,
    )
    limits = {"rpm_limit": key.rpm_limit, "tpm_limit": key.tpm_limit}
    if secret:
        return CreatedKeyOut(*fields, key=secret, fit_to_budget=key.fit_to_budget, **limits)
    return KeyOut(*fields, fit_to_budget=key.fit_to_budget, **limits)


class KeyHistoryOut(msgspec.Struct):
    data: list[directory.KeyEvent]  # newest first
    next_cursor: str | None  # pass as `cursor` for the next (older) page; null: no more
    as_of: AsOf


def view_out(view: KeyView, as_of: AsOf | None = None) -> KeyOut:
    out = key_out(view.row, view.totals, view.window)
    out.as_of = as_of
    return out


class KeyController(Controller):
    path = "/api/keys"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201, cache_control=NO_STORE, responses=errors(400, 403, 404))
    async def create(
        self, key_service: NamedDependency[KeyService], account_id: NamedDependency[UUID], data: JSONBody[KeyIn]
    ) -> CreatedKeyOut:
        created = await key_service.create(
            account_id,
            data.label,
            data.spend_cap_usd,
            data.default_model,
            data.allowed_models,
            data.expires_at,
            data.cap_reset,
            data.fit_to_budget,
            data.rpm_limit,
            data.tpm_limit,
        )
        return aggregate_out(created.key, created.secret)

    @get("/", responses=errors(400))
    async def list_keys(
        self,
        key_service: NamedDependency[KeyService],
        account_id: NamedDependency[UUID],
        start: Annotated[datetime | None, QueryParameter(name="from")] = None,
        end: Annotated[datetime | None, QueryParameter(name="to")] = None,
    ) -> KeyListOut:
        listing = await key_service.listing(account_id, start, end)
        return KeyListOut([view_out(v) for v in listing.keys], listing.as_of)

    @get("/{key_id:uuid}", responses=errors(400, 404))
    async def get_key(
        self,
        key_service: NamedDependency[KeyService],
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        start: Annotated[datetime | None, QueryParameter(name="from")] = None,
        end: Annotated[datetime | None, QueryParameter(name="to")] = None,
        at: FromQuery[datetime | None] = None,
    ) -> KeyOut:
        """The key and its stats; with `?at=` its settings as they were at that instant."""
        view, as_of = await key_service.one(account_id, key_id, start, end, at)
        return view_out(view, as_of)

    @patch("/{key_id:uuid}", responses=errors(400, 404, 409))
    async def update(
        self,
        key_service: NamedDependency[KeyService],
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        data: JSONBody[KeyPatch],
    ) -> KeyOut:
        changed = await key_service.update(account_id, key_id, msgspec.structs.asdict(data))
        return aggregate_out(changed.key)

    @post("/{key_id:uuid}/revoke", status_code=200, responses=errors(404, 409))
    async def revoke(
        self, key_service: NamedDependency[KeyService], account_id: NamedDependency[UUID], key_id: FromPath[UUID]
    ) -> KeyOut:
        return aggregate_out((await key_service.act(account_id, key_id, "revoke")).key)

    @post("/{key_id:uuid}/disable", status_code=200, responses=errors(404, 409))
    async def disable(
        self, key_service: NamedDependency[KeyService], account_id: NamedDependency[UUID], key_id: FromPath[UUID]
    ) -> KeyOut:
        return aggregate_out((await key_service.act(account_id, key_id, "disable")).key)

    @post("/{key_id:uuid}/enable", status_code=200, responses=errors(404, 409))
    async def enable(
        self, key_service: NamedDependency[KeyService], account_id: NamedDependency[UUID], key_id: FromPath[UUID]
    ) -> KeyOut:
        return aggregate_out((await key_service.act(account_id, key_id, "enable")).key)

    @post("/{key_id:uuid}/rotate", status_code=200, cache_control=NO_STORE, responses=errors(400, 404, 409))
    async def rotate(
        self,
        key_service: NamedDependency[KeyService],
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        data: JSONBody[RotateIn | None] = None,
    ) -> CreatedKeyOut:
        grace = timedelta(seconds=(data or RotateIn()).grace_seconds)
        rotated = await key_service.rotate(account_id, key_id, grace)
        return aggregate_out(rotated.key, rotated.secret)

    @get("/{key_id:uuid}/events", responses=errors(400, 404))
    async def history(
        self,
        key_service: NamedDependency[KeyService],
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        limit: FromQuery[int] = HISTORY_PAGE,
        cursor: FromQuery[str | None] = None,
    ) -> KeyHistoryOut:
        """One page of the key's history, newest first."""
        page = await key_service.history(account_id, key_id, limit, cursor)
        return KeyHistoryOut(
            page.events,
            page.next_cursor,
            page.as_of,
        )
