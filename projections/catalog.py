"""Catalog read model: the models operators added (`added_models`), and the operator's runtime changes to model
prices and availability, as they stand (`model_overrides`) and one row per change (`model_changes`), so the
catalog at any past instant can be told. Adding a model sets its price and switches it on (`model_overrides`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import psycopg

from domain.catalog import MODEL_CHANGES, ModelSettings
from domain.events import event_names
from domain.pricing import Price
from projections.readmodel import Envelope


class CatalogModel:
    name = "catalog"
    tables = ("model_overrides", "model_changes", "added_models")
    topics = event_names(MODEL_CHANGES)

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t["model_overrides"]} (
                model_id text primary key,
                prompt_per_1k numeric(40, 0),
                completion_per_1k numeric(40, 0),
                enabled boolean,
                updated_at timestamptz not null
            );
            -- cache prices (null: the prompt price), added to tables made before them
            alter table {t["model_overrides"]} add column if not exists cached_per_1k numeric(40, 0),
                add column if not exists cache_write_per_1k numeric(40, 0);
            create table if not exists {t["model_changes"]} (
                position bigint primary key,
                model_id text not null,
                time timestamptz not null,
                prompt_per_1k numeric(40, 0),  -- null: this change left the prices alone
                completion_per_1k numeric(40, 0),
                cached_per_1k numeric(40, 0),
                cache_write_per_1k numeric(40, 0),
                enabled boolean  -- null: this change left the switch alone
            );
            create index if not exists {t["model_changes"]}_model on {t["model_changes"]} (model_id, time);
            create table if not exists {t["added_models"]} (
                model_id text primary key,
                provider text not null,
                upstream text not null,
                prompt_per_1k numeric(40, 0) not null,  -- as added (model_overrides: as it is now)
                completion_per_1k numeric(40, 0) not null,
                cached_per_1k numeric(40, 0),
                cache_write_per_1k numeric(40, 0),
                max_output_tokens bigint,  -- null: the default of its provider kind
                context_tokens bigint,
                added_at timestamptz not null,
                operator text
            )""")

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        for item in batch:
            e = item.event
            if isinstance(e, ModelSettings.Added):
                await self._added(cur, t, e)
            price, enabled = MODEL_CHANGES[type(e)](e)
            columns: dict[str, Any] = msgspec.structs.asdict(price) if price is not None else {}
            if enabled is not None:
                columns["enabled"] = enabled
            names = ", ".join(columns)
            updates = ", ".join(f"{name} = excluded.{name}" for name in columns)
            await cur.execute(
                f"""insert into {t["model_overrides"]} (model_id, {names}, updated_at)
                    values (%s, {", ".join(["%s"] * len(columns))}, %s)
                    on conflict (model_id) do update set {updates}, updated_at = excluded.updated_at""",
                (e.model_id, *columns.values(), e.timestamp),
            )
            await cur.execute(
                f"""insert into {t["model_changes"]} (position, model_id, time, {names})
                    values (%s, %s, %s, {", ".join(["%s"] * len(columns))}) on conflict (position) do nothing""",
                (item.position, e.model_id, e.timestamp, *columns.values()),
            )

    async def _added(self, cur: psycopg.AsyncCursor, t: dict[str, str], e: ModelSettings.Added) -> None:
        await cur.execute(
            f"""insert into {t["added_models"]} (model_id, provider, upstream, prompt_per_1k, completion_per_1k,
                    cached_per_1k, cache_write_per_1k, max_output_tokens, context_tokens, added_at, operator)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                on conflict (model_id) do update set provider = excluded.provider, upstream = excluded.upstream,
                    prompt_per_1k = excluded.prompt_per_1k, completion_per_1k = excluded.completion_per_1k,
                    cached_per_1k = excluded.cached_per_1k, cache_write_per_1k = excluded.cache_write_per_1k,
                    max_output_tokens = excluded.max_output_tokens, context_tokens = excluded.context_tokens,
                    added_at = excluded.added_at, operator = excluded.operator""",
            (
                e.model_id,
                e.provider,
                e.upstream,
                e.prompt_per_1k,
                e.completion_per_1k,
                e.cached_per_1k,
                e.cache_write_per_1k,
                e.max_output_tokens,
                e.context_tokens,
                e.timestamp,
                e.operator,
            ),
        )


class AddedModel(msgspec.Struct, frozen=True):
    model_id: str
    provider: str
    upstream: str
    price: Price  # as added
    max_output_tokens: int | None
    context_tokens: int | None


async def added(conn: psycopg.AsyncConnection) -> list[AddedModel]:
    """The models operators added, oldest first."""
    cur = await conn.execute(
        "select model_id, provider, upstream, prompt_per_1k, completion_per_1k, cached_per_1k, cache_write_per_1k,"
        " max_output_tokens, context_tokens from added_models order by added_at, model_id"
    )
    return [
        AddedModel(r[0], r[1], r[2], Price(int(r[3]), int(r[4]), _pico(r[5]), _pico(r[6])), r[7], r[8])
        for r in await cur.fetchall()
    ]


async def overrides(conn: psycopg.AsyncConnection) -> dict[str, tuple[Price | None, bool | None]]:
    cur = await conn.execute(
        "select model_id, prompt_per_1k, completion_per_1k, enabled, cached_per_1k,"
        " cache_write_per_1k from model_overrides"
    )
    return {
        r[0]: (Price(int(r[1]), int(r[2]), _pico(r[4]), _pico(r[5])) if r[1] is not None else None, r[3])
        for r in await cur.fetchall()
    }


async def overrides_at(conn: psycopg.AsyncConnection, at: datetime) -> dict[str, tuple[Price | None, bool | None]]:
    """The operator's changes in force at `at`, as `overrides` gives those in force now: for each model changed
    by then, its last price set and its last switch (None: never changed by then)."""
    cur = await conn.execute(
        """select coalesce(p.model_id, s.model_id), p.prompt_per_1k, p.completion_per_1k, s.enabled,
                p.cached_per_1k, p.cache_write_per_1k
           from (select distinct on (model_id) * from model_changes
                 where time <= %(at)s and prompt_per_1k is not null order by model_id, time desc, position desc) p
           full join (select distinct on (model_id) * from model_changes
                 where time <= %(at)s and enabled is not null order by model_id, time desc, position desc) s
           on s.model_id = p.model_id""",
        {"at": at},
    )
    return {
        r[0]: (Price(int(r[1]), int(r[2]), _pico(r[4]), _pico(r[5])) if r[1] is not None else None, r[3])
        for r in await cur.fetchall()
    }


def _pico(value) -> int | None:
    return int(value) if value is not None else None
