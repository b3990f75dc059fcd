"""API keys of the calling account."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.di import Provide
from litestar.params import Parameter

from api.auth import current_account
from api.errors import ApiError
from api.routes.bodies import AsOf
from api.runtime import BILLING, DIRECTORY, Runtime
from commands.keys import KeyChanges
from domain.apikey import ApiKey
from domain.events import event_name
from domain.money import pico_to_usd, usd_to_pico
from projections import billing, directory
from projections.readmodel import position_of


Money = str | int | float  # floats are refused with a clear message: money travels as decimal strings


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    label: str
    spend_cap_usd: Money | None = None
    cap_reset: str | None = None
    default_model: str | None = None
    allowed_models: list[str] | None = None
    expires_at: datetime | None = None


class KeyPatch(msgspec.Struct, forbid_unknown_fields=True):
    label: str | msgspec.UnsetType = msgspec.UNSET
    spend_cap_usd: Money | None | msgspec.UnsetType = msgspec.UNSET
    cap_reset: str | None | msgspec.UnsetType = msgspec.UNSET
    default_model: str | None | msgspec.UnsetType = msgspec.UNSET
    allowed_models: list[str] | None | msgspec.UnsetType = msgspec.UNSET
    expires_at: datetime | None | msgspec.UnsetType = msgspec.UNSET


class RotateIn(msgspec.Struct, forbid_unknown_fields=True):
    grace_seconds: int = 0  # how long the old secret keeps working; 0 = it stops at once


class StatsOut(msgspec.Struct):
    requests: int
    successes: int
    errors: int
    error_rate: float  # errors / requests, 0 when there were none
    prompt_tokens: int
    completion_tokens: int
    spend_usd: str

    @classmethod
    def of(cls, s: billing.KeyStats) -> "StatsOut":
        rate = round(s.errors / s.requests, 4) if s.requests else 0.0
        return cls(s.requests, s.requests - s.errors, s.errors, rate, s.prompt_tokens, s.completion_tokens,
                   pico_to_usd(s.spend))


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


class CreatedKeyOut(KeyOut, kw_only=True):
    key: str  # the secret: shown in this response only


class KeyListOut(msgspec.Struct):
    data: list[KeyOut]
    as_of: AsOf


def _usd(pico: int | None) -> str | None:
    return pico_to_usd(pico) if pico is not None else None


def key_out(row: directory.KeyRow, stats: billing.KeyStats | None = None,
            window: billing.KeyStats | None = None) -> KeyOut:
    totals = stats or billing.KeyStats()
    return KeyOut(row.key_id, row.label, row.prefix, row.status, _usd(row.spend_cap), row.cap_reset,
                  row.default_model, row.allowed_models, row.expires_at, row.created_at, pico_to_usd(totals.spend),
                  StatsOut.of(totals), StatsOut.of(window or billing.KeyStats()) if window is not None else None)


async def _as_of(conn) -> AsOf:
    """Key answers join two read models: they are as current as the one further behind."""
    position, time = min([await position_of(conn, DIRECTORY), await position_of(conn, BILLING)],
                         key=lambda p: p[0])
    return AsOf(position, time)


async def _stats(conn, account_id: UUID, start: datetime | None, end: datetime | None):
    totals = await billing.key_stats(conn, account_id)
    window = await billing.key_stats(conn, account_id, start, end) if start or end else None
    return totals, window


def aggregate_out(key: ApiKey, secret: str | None = None) -> KeyOut:
    fields = (key.id, key.label, key.prefix, key.status, _usd(key.spend_cap), key.cap_reset, key.default_model,
              key.allowed_models, key.expires_at, key.created_on)
    return CreatedKeyOut(*fields, key=secret) if secret else KeyOut(*fields)


class KeyEventOut(msgspec.Struct):
    type: str
    time: datetime
    version: int
    by: str  # account | operator | gateway
    details: dict


def _check_model(runtime: Runtime, model: str | None, field: str) -> None:
    if model is not None and runtime.catalog.get(model) is None:
        raise ApiError(400, f"{field} {model!r} is not an enabled model; GET /api/models lists them",
                       "model_not_found")


class KeyController(Controller):
    path = "/api/keys"
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201)
    async def create(self, request: Request, account_id: UUID, data: KeyIn) -> CreatedKeyOut:
        runtime: Runtime = request.app.state.runtime
        cap = usd_to_pico(data.spend_cap_usd, field="spend_cap_usd") if data.spend_cap_usd is not None else None
        _check_model(runtime, data.default_model, "default_model")
        for model in data.allowed_models or []:
            _check_model(runtime, model, "allowed_models entry")
        created = await asyncio.to_thread(runtime.keys.create, account_id, data.label, cap, data.default_model,
                                          data.allowed_models, data.expires_at, data.cap_reset)
        await runtime.caught_up(DIRECTORY, created.position)
        return aggregate_out(created.key, created.secret)

    @get("/")
    async def list_keys(self, request: Request, account_id: UUID,
                        start: datetime | None = Parameter(query="from", default=None),
                        end: datetime | None = Parameter(query="to", default=None)) -> KeyListOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            rows = await directory.keys_of(conn, account_id)
            totals, window = await _stats(conn, account_id, start, end)
            as_of = await _as_of(conn)
        return KeyListOut([key_out(r, totals.get(r.key_id), (window or {}).get(r.key_id, billing.KeyStats())
                                   if window is not None else None) for r in rows], as_of)

    @get("/{key_id:uuid}")
    async def get_key(self, request: Request, account_id: UUID, key_id: UUID,
                      start: datetime | None = Parameter(query="from", default=None),
                      end: datetime | None = Parameter(query="to", default=None)) -> KeyOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            row = await directory.key_of(conn, account_id, key_id)
            if row is None:
                raise ApiError(404, f"no API key {key_id} in this account", "not_found")
            totals, window = await _stats(conn, account_id, start, end)
            as_of = await _as_of(conn)
        out = key_out(row, totals.get(key_id), (window or {}).get(key_id, billing.KeyStats())
                      if window is not None else None)
        out.as_of = as_of
        return out

    @patch("/{key_id:uuid}")
    async def update(self, request: Request, account_id: UUID, key_id: UUID, data: KeyPatch) -> KeyOut:
        runtime: Runtime = request.app.state.runtime
        changes = msgspec.structs.asdict(data)
        if isinstance(data.spend_cap_usd, (str, int, float)):
            changes["spend_cap_usd"] = usd_to_pico(data.spend_cap_usd, field="spend_cap_usd")
        if isinstance(data.default_model, str):
            _check_model(runtime, data.default_model, "default_model")
        for model in data.allowed_models or [] if isinstance(data.allowed_models, list) else []:
            _check_model(runtime, model, "allowed_models entry")
        changes["spend_cap"] = changes.pop("spend_cap_usd")
        result = await asyncio.to_thread(runtime.keys.update, account_id, key_id, KeyChanges(**changes))
        return await self._answer(runtime, result)

    @post("/{key_id:uuid}/revoke", status_code=200)
    async def revoke(self, request: Request, account_id: UUID, key_id: UUID) -> KeyOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.keys.revoke, account_id, key_id, "account")
        return await self._answer(runtime, result)

    @post("/{key_id:uuid}/disable", status_code=200)
    async def disable(self, request: Request, account_id: UUID, key_id: UUID) -> KeyOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.keys.disable, account_id, key_id, "account")
        return await self._answer(runtime, result)

    @post("/{key_id:uuid}/enable", status_code=200)
    async def enable(self, request: Request, account_id: UUID, key_id: UUID) -> KeyOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.keys.enable, account_id, key_id, "account")
        return await self._answer(runtime, result)

    @post("/{key_id:uuid}/rotate", status_code=200)
    async def rotate(self, request: Request, account_id: UUID, key_id: UUID,
                     data: RotateIn | None = None) -> CreatedKeyOut:
        runtime: Runtime = request.app.state.runtime
        grace = timedelta(seconds=(data or RotateIn()).grace_seconds)
        result = await asyncio.to_thread(runtime.keys.rotate, account_id, key_id, grace)
        await runtime.caught_up(DIRECTORY, result.position)
        return aggregate_out(result.key, result.secret)

    @get("/{key_id:uuid}/events")
    async def history(self, request: Request, account_id: UUID, key_id: UUID) -> list[KeyEventOut]:
        runtime: Runtime = request.app.state.runtime
        events = await asyncio.to_thread(runtime.keys.history, account_id, key_id)
        history = []
        for e in events:
            name = event_name(type(e))
            if name in _BUDGET_EVENTS:  # the gateways' budget bookkeeping, not changes to the key
                continue
            details = _public(e)
            history.append(KeyEventOut(name, e.timestamp, e.originator_version, details.pop("by", "account"),
                                       details))
        return history

    async def _answer(self, runtime: Runtime, result) -> KeyOut:
        await runtime.caught_up(DIRECTORY, result.position)
        return aggregate_out(result.key)


_BUDGET_EVENTS = {"key.budget_leased", "key.lease_extended", "key.lease_settled", "key.spend_period_started"}
_PRIVATE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "key_hash",
                   "previous_hash", "account_id"}


def _public(event) -> dict:
    """An event's fields without secrets (hashes) or envelope; money as USD strings."""
    details = {k: v for k, v in vars(event).items() if k not in _PRIVATE_FIELDS}
    if "spend_cap" in details:
        details["spend_cap_usd"] = _usd(details.pop("spend_cap"))
    return msgspec.to_builtins(details)
