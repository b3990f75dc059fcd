"""API keys of the calling account."""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

import msgspec
from litestar import Controller, Request, get, post
from litestar.di import Provide

from api.auth import current_account
from api.errors import ApiError
from api.routes.bodies import AsOf
from api.runtime import DIRECTORY, Runtime
from domain.money import pico_to_usd, usd_to_pico
from projections import directory
from projections.readmodel import position_of
from projections.runner import wait_for_position


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    label: str
    spend_cap_usd: str | int | float | None = None
    default_model: str | None = None


class KeyOut(msgspec.Struct):
    id: UUID
    label: str
    prefix: str
    status: str
    spend_cap_usd: str | None
    default_model: str | None
    created_at: datetime


class CreatedKeyOut(KeyOut):
    key: str  # the secret: shown in this response only


class KeyListOut(msgspec.Struct):
    data: list[KeyOut]
    as_of: AsOf


def key_out(row: directory.KeyRow) -> KeyOut:
    return KeyOut(row.key_id, row.label, row.prefix, row.status,
                  pico_to_usd(row.spend_cap) if row.spend_cap is not None else None, row.default_model,
                  row.created_at)


class KeyController(Controller):
    path = "/api/keys"
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201)
    async def create(self, request: Request, account_id: UUID, data: KeyIn) -> CreatedKeyOut:
        runtime: Runtime = request.app.state.runtime
        cap = usd_to_pico(data.spend_cap_usd, field="spend_cap_usd") if data.spend_cap_usd is not None else None
        if data.default_model is not None and runtime.catalog.get(data.default_model) is None:
            raise ApiError(400, f"default_model {data.default_model!r} is not an enabled model; "
                                f"GET /api/models lists them", "model_not_found")
        created = await asyncio.to_thread(runtime.keys.create, account_id, data.label, cap, data.default_model)
        await wait_for_position(runtime.pool, DIRECTORY, created.position)
        k = created.key
        return CreatedKeyOut(k.id, k.label, k.prefix, "active",
                             pico_to_usd(k.spend_cap) if k.spend_cap is not None else None, k.default_model,
                             k.created_on, created.secret)

    @get("/")
    async def list_keys(self, request: Request, account_id: UUID) -> KeyListOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            rows = await directory.keys_of(conn, account_id)
            position, time = await position_of(conn, DIRECTORY)
        return KeyListOut([key_out(r) for r in rows], AsOf(position, time))

    @get("/{key_id:uuid}")
    async def get_key(self, request: Request, account_id: UUID, key_id: UUID) -> KeyOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            row = await directory.key_of(conn, account_id, key_id)
        if row is None:
            raise ApiError(404, f"no API key {key_id} in this account", "not_found")
        return key_out(row)
