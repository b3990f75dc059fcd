"""API keys: create, change, disable/enable/revoke, rotate, list with their stats, history."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from uuid import UUID

import msgspec

from api.errors import ApiError
from api.routes.bodies import AsOf
from api.runtime import BILLING, DIRECTORY, Runtime
from api.services.models import check_model
from commands.keys import KeyChanges
from domain.apikey import ApiKey
from domain.bounds import check_aware
from domain.money import usd_to_pico
from projections import billing, directory
from projections.readmodel import position_of

KEY_ACTIONS = ("disable", "enable", "revoke")  # by the account; rotate takes a grace period


class KeyView(msgspec.Struct):
    """A key as the read models know it, with its totals (all time) and, when asked, over a window."""

    row: directory.KeyRow
    totals: billing.KeyStats
    window: billing.KeyStats | None = None


class KeyListing(msgspec.Struct):
    keys: list[KeyView]
    as_of: AsOf


HISTORY_PAGE = 50  # a key's events per page (default)
MAX_HISTORY_PAGE = 500


class HistoryPage(msgspec.Struct):
    events: list[directory.KeyEvent]  # newest first
    next_cursor: str | None  # the next (older) page; None: this is the oldest
    as_of: AsOf


def _history_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not cursor.isdigit() or not 0 < int(cursor) < 2**31:
        raise ApiError(
            400, "cursor is not one this API gave out; pass next_cursor as is", "invalid_request", param="cursor"
        )
    return int(cursor)


class Changed(msgspec.Struct):
    key: ApiKey
    secret: str | None = None  # a new secret (create, rotate): shown once


def error_rate(stats: billing.KeyStats) -> float:
    """errors / requests, 0 when there were none."""
    return round(stats.errors / stats.requests, 4) if stats.requests else 0.0


class KeyService:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def create(
        self,
        account_id: UUID,
        label: str,
        spend_cap_usd=None,
        default_model: str | None = None,
        allowed_models: list[str] | None = None,
        expires_at: datetime | None = None,
        cap_reset: str | None = None,
        fit_to_budget: bool = False,
    ) -> Changed:
        runtime = self.runtime
        cap = usd_to_pico(spend_cap_usd, field="spend_cap_usd") if spend_cap_usd is not None else None
        check_model(runtime, default_model, "default_model")
        for model in allowed_models or []:
            check_model(runtime, model, "allowed_models entry")
        created = await asyncio.to_thread(
            runtime.keys.create,
            account_id,
            label,
            cap,
            default_model,
            allowed_models,
            expires_at,
            cap_reset,
            fit_to_budget,
        )
        await runtime.caught_up(DIRECTORY, created.position)
        return Changed(created.key, created.secret)

    async def update(self, account_id: UUID, key_id: UUID, changes: dict) -> Changed:
        """`changes` holds only the fields to change (KeyChanges' names, with `spend_cap_usd` in USD)."""
        changes = dict(changes)
        if isinstance(changes.get("spend_cap_usd"), (str, int, float)):
            changes["spend_cap_usd"] = usd_to_pico(changes["spend_cap_usd"], field="spend_cap_usd")
        if isinstance(changes.get("default_model"), str):
            check_model(self.runtime, changes["default_model"], "default_model")
        if isinstance(changes.get("allowed_models"), list):
            for model in changes["allowed_models"]:
                check_model(self.runtime, model, "allowed_models entry")
        if "spend_cap_usd" in changes:
            changes["spend_cap"] = changes.pop("spend_cap_usd")
        result = await asyncio.to_thread(self.runtime.keys.update, account_id, key_id, KeyChanges(**changes))
        await self.runtime.caught_up(DIRECTORY, result.position)
        return Changed(result.key)

    async def act(self, account_id: UUID, key_id: UUID, action: str) -> Changed:
        """disable, enable or revoke, by the account."""
        if action not in KEY_ACTIONS:
            raise ApiError(400, f"action takes one of {', '.join(KEY_ACTIONS)}; got {action!r}", "invalid_request")
        result = await asyncio.to_thread(getattr(self.runtime.keys, action), account_id, key_id, "account")
        await self.runtime.caught_up(DIRECTORY, result.position)
        return Changed(result.key)

    async def rotate(self, account_id: UUID, key_id: UUID, grace: timedelta) -> Changed:
        result = await asyncio.to_thread(self.runtime.keys.rotate, account_id, key_id, grace)
        await self.runtime.caught_up(DIRECTORY, result.position)
        return Changed(result.key, result.secret)

    async def listing(self, account_id: UUID, start: datetime | None = None, end: datetime | None = None) -> KeyListing:
        async with self.runtime.pool.connection() as conn:
            rows = await directory.keys_of(conn, account_id)
            totals, window = await _stats(conn, account_id, start, end)
            as_of = await _as_of(conn)
        return KeyListing([_view(r, totals, window) for r in rows], as_of)

    async def one(
        self, account_id: UUID, key_id: UUID, start: datetime | None = None, end: datetime | None = None
    ) -> tuple[KeyView, AsOf]:
        async with self.runtime.pool.connection() as conn:
            row = await directory.key_of(conn, account_id, key_id)
            if row is None:
                raise ApiError(404, f"no API key {key_id} in this account", "not_found")
            totals, window = await _stats(conn, account_id, start, end)
            as_of = await _as_of(conn)
        return _view(row, totals, window), as_of

    async def history(
        self, account_id: UUID, key_id: UUID, limit: int = HISTORY_PAGE, cursor: str | None = None
    ) -> HistoryPage:
        """One page of what happened to the key, newest first, without the gateways' budget bookkeeping; read
        from the directory read model (never the key's whole event history)."""
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise ApiError(400, f"limit must be 1 to {MAX_HISTORY_PAGE}; got {limit}", "invalid_request", param="limit")
        before = _history_cursor(cursor)
        async with self.runtime.pool.connection() as conn:
            if await directory.key_of(conn, account_id, key_id) is None:
                raise ApiError(404, f"no API key {key_id} in this account", "not_found")
            events = await directory.key_history(conn, key_id, limit + 1, before)
            as_of = AsOf(*await position_of(conn, DIRECTORY))
        more = len(events) > limit
        events = events[:limit]
        return HistoryPage(events, str(events[-1].version) if more else None, as_of)


def _view(row: directory.KeyRow, totals: dict, window: dict | None) -> KeyView:
    return KeyView(
        row,
        totals.get(row.key_id) or billing.KeyStats(),
        window.get(row.key_id, billing.KeyStats()) if window is not None else None,
    )


async def _as_of(conn) -> AsOf:
    """Key answers join two read models: they are as current as the one further behind."""
    position, time = min([await position_of(conn, DIRECTORY), await position_of(conn, BILLING)], key=lambda p: p[0])
    return AsOf(position, time)


async def _stats(conn, account_id: UUID, start: datetime | None, end: datetime | None):
    check_aware(start, "from"), check_aware(end, "to")
    totals = await billing.key_stats(conn, account_id)
    window = await billing.key_stats(conn, account_id, start, end) if start or end else None
    return totals, window
