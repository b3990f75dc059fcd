"""API keys: create, change, disable/enable/revoke, rotate, list with their stats, history."""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import msgspec

from psycopg_pool import AsyncConnectionPool

from api.read_models import BILLING, DIRECTORY
from api.services.as_of import AsOf, read_as_of
from api.services.errors import Invalid, Missing
from api.services.models import check_model
from api.services.read_your_writes import ReadModelWaiter
from commands.keys import KeyCommands
from commands.keys import KeyChanges
from gateway.catalog import Catalog
from domain.apikey import ApiKey
from domain.bounds import check_aware
from domain.money import usd_to_pico
from projections import billing, directory
from projections.spend_history import SpendRow, spend_history

KEY_ACTIONS = ("disable", "enable", "revoke")  # by the account; rotate takes a grace period


class KeyView(msgspec.Struct):
    """A key as the read models know it, with its totals (all time) and, when asked, over a window."""

    row: directory.KeyRow
    totals: billing.KeyStats
    window: billing.KeyStats | None = None
    replaced_secret_until: datetime | None = None  # one key's view: the grace of the secret it was rotated from


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
        raise Invalid("cursor is not one this API gave out; pass next_cursor as is", "invalid_request", param="cursor")
    return int(cursor)


class Changed(msgspec.Struct):
    key: ApiKey
    secret: str | None = None  # a new secret (create, rotate): shown once


def error_rate(stats: billing.KeyStats) -> float:
    """errors / requests, 0 when there were none."""
    return round(stats.errors / stats.requests, 4) if stats.requests else 0.0


class KeyService:
    def __init__(self, keys: KeyCommands, pool: AsyncConnectionPool, waiter: ReadModelWaiter, catalog: Catalog):
        self.keys = keys
        self.pool = pool
        self.waiter = waiter
        self.catalog = catalog  # the models a key may name

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
        rpm_limit: int | None = None,
        tpm_limit: int | None = None,
    ) -> Changed:
        cap = usd_to_pico(spend_cap_usd, field="spend_cap_usd") if spend_cap_usd is not None else None
        check_model(self.catalog, default_model, "default_model")
        for model in allowed_models or []:
            check_model(self.catalog, model, "allowed_models entry")
        created = await self.waiter.then_caught_up(
            DIRECTORY,
            self.keys.create,
            account_id,
            label,
            cap,
            default_model,
            allowed_models,
            expires_at,
            cap_reset,
            fit_to_budget,
            rpm_limit,
            tpm_limit,
        )
        return Changed(created.key, created.secret)

    async def update(self, account_id: UUID, key_id: UUID, changes: dict) -> Changed:
        """`changes` holds only the fields to change (KeyChanges' names, with `spend_cap_usd` in USD)."""
        changes = dict(changes)
        if isinstance(changes.get("spend_cap_usd"), (str, int, float)):
            changes["spend_cap_usd"] = usd_to_pico(changes["spend_cap_usd"], field="spend_cap_usd")
        if isinstance(changes.get("default_model"), str):
            check_model(self.catalog, changes["default_model"], "default_model")
        if isinstance(changes.get("allowed_models"), list):
            for model in changes["allowed_models"]:
                check_model(self.catalog, model, "allowed_models entry")
        if "spend_cap_usd" in changes:
            changes["spend_cap"] = changes.pop("spend_cap_usd")
        result = await self.waiter.then_caught_up(
            DIRECTORY, self.keys.update, account_id, key_id, KeyChanges(**changes)
        )
        return Changed(result.key)

    async def act(self, account_id: UUID, key_id: UUID, action: str) -> Changed:
        """disable, enable or revoke, by the account."""
        if action not in KEY_ACTIONS:
            raise Invalid(f"action takes one of {', '.join(KEY_ACTIONS)}; got {action!r}", "invalid_request")
        result = await self.waiter.then_caught_up(DIRECTORY, getattr(self.keys, action), account_id, key_id, "account")
        return Changed(result.key)

    async def rotate(self, account_id: UUID, key_id: UUID, grace: timedelta) -> Changed:
        result = await self.waiter.then_caught_up(DIRECTORY, self.keys.rotate, account_id, key_id, grace)
        return Changed(result.key, result.secret)

    async def listing(self, account_id: UUID, start: datetime | None = None, end: datetime | None = None) -> KeyListing:
        async with self.pool.connection() as conn:
            rows = await directory.keys_of(conn, account_id)
            totals, window = await _stats(conn, account_id, start, end)
            as_of = await read_as_of(conn, DIRECTORY, BILLING)  # key answers join two read models
        return KeyListing([_view(r, totals, window) for r in rows], as_of)

    async def rows(self, account_id: UUID) -> list[directory.KeyRow]:
        """The account's keys as the directory holds them, without their stats (a form's choice of key)."""
        async with self.pool.connection() as conn:
            return await directory.keys_of(conn, account_id)

    async def one(
        self,
        account_id: UUID,
        key_id: UUID,
        start: datetime | None = None,
        end: datetime | None = None,
        at: datetime | None = None,
    ) -> tuple[KeyView, AsOf]:
        """The key with its stats; with `at`, its settings (cap, status, allowed and default models, ...) as they
        were at that instant."""
        check_aware(at, "at")
        async with self.pool.connection() as conn:
            row = await directory.key_of(conn, account_id, key_id)
            if row is None:
                raise Missing(f"no API key {key_id} in this account", "not_found")
            if at is not None:
                row = await directory.key_at(conn, account_id, key_id, at)
                if row is None:
                    raise Missing(f"the API key {key_id} did not exist yet at {at.isoformat()}", "not_found")
            totals, window = await _stats(conn, account_id, start, end)
            grace = await directory.replaced_secret_until(conn, key_id)
            as_of = await read_as_of(conn, DIRECTORY, BILLING)
        return msgspec.structs.replace(_view(row, totals, window), replaced_secret_until=grace), as_of

    async def usage_by_model(self, account_id: UUID, key_id: UUID) -> list[SpendRow]:
        """The key's requests, tokens and spend per model, all time, the dearest first."""
        async with self.pool.connection() as conn:
            rows = await spend_history(conn, account_id, ["key", "provider", "model"], None, None)
        return sorted((r for r in rows if r.group["key"] == str(key_id)), key=lambda r: (-r.spend, r.group["model"]))

    async def history(
        self, account_id: UUID, key_id: UUID, limit: int = HISTORY_PAGE, cursor: str | None = None
    ) -> HistoryPage:
        """One page of what happened to the key, newest first, without the gateways' budget bookkeeping; read
        from the directory read model (never the key's whole event history)."""
        if not 1 <= limit <= MAX_HISTORY_PAGE:
            raise Invalid(f"limit must be 1 to {MAX_HISTORY_PAGE}; got {limit}", "invalid_request", param="limit")
        before = _history_cursor(cursor)
        async with self.pool.connection() as conn:
            if await directory.key_of(conn, account_id, key_id) is None:
                raise Missing(f"no API key {key_id} in this account", "not_found")
            events = await directory.key_history(conn, key_id, limit + 1, before)
            as_of = await read_as_of(conn, DIRECTORY)
        more = len(events) > limit
        events = events[:limit]
        return HistoryPage(events, str(events[-1].version) if more else None, as_of)


def _view(row: directory.KeyRow, totals: dict, window: dict | None) -> KeyView:
    return KeyView(
        row,
        totals.get(row.key_id) or billing.KeyStats(),
        window.get(row.key_id, billing.KeyStats()) if window is not None else None,
    )


async def _stats(conn, account_id: UUID, start: datetime | None, end: datetime | None):
    check_aware(start, "from"), check_aware(end, "to")
    totals = await billing.key_stats(conn, account_id)
    window = await billing.key_stats(conn, account_id, start, end) if start or end else None
    return totals, window
