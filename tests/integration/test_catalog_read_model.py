"""The catalog read model keeps the operator's prices, cache prices included; one made before cache prices existed
is upgraded in place at start, and keeps its rows."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from domain.catalog import ModelSettings
from domain.pricing import Price
from projections import catalog
from projections.catalog import CatalogModel
from projections.readmodel import Envelope, ensure_schema, physical_tables


async def test_a_price_change_with_cache_prices_is_kept(database_url):
    settings = ModelSettings(model_id="claude/sonnet")
    settings.change_price(Price.from_usd("3", "15", "0.3", "3.75"), "operator")
    settings.change_price(Price.from_usd("3", "15", "0.3"), "operator")  # the write price follows the prompt again
    changes = [
        Envelope(n, datetime.now(timezone.utc), "model.price_changed", e)
        for n, e in enumerate(settings.collect_events()[1:], 1)
    ]
    model = CatalogModel()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ensure_schema(conn, [model])
        async with conn.cursor() as cur:
            await model.apply(cur, physical_tables(model, 1), changes[:1])
            assert (await catalog.overrides(conn))["claude/sonnet"][0] == Price.from_usd("3", "15", "0.3", "3.75")
            await model.apply(cur, physical_tables(model, 1), changes[1:])
        assert await catalog.overrides(conn) == {"claude/sonnet": (Price.from_usd("3", "15", "0.3"), None)}


async def test_old_catalog_tables_get_the_cache_price_columns(database_url):
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ensure_schema(conn, [CatalogModel()])
        # as an older Mesh left it: no cache price columns, the view made without them
        await conn.execute("drop view model_overrides")
        await conn.execute("alter table model_overrides_g1 drop column cached_per_1k, drop column cache_write_per_1k")
        await conn.execute("create view model_overrides as select * from model_overrides_g1")
        await conn.execute(
            "insert into model_overrides_g1 (model_id, prompt_per_1k, completion_per_1k, updated_at)"
            " values ('acme/gpt', 1000, 2000, now())"
        )
        await ensure_schema(conn, [CatalogModel()])
        assert await catalog.overrides(conn) == {"acme/gpt": (Price(1000, 2000), None)}
        await ensure_schema(conn, [CatalogModel()])  # again: nothing changes
        assert await catalog.overrides(conn) == {"acme/gpt": (Price(1000, 2000), None)}


async def test_the_catalog_at_a_past_instant_has_the_changes_in_force_then(database_url):
    settings = ModelSettings(model_id="acme/a")
    settings.change_price(Price.from_usd("1", "2"), "operator")
    settings.disable("operator")
    settings.change_price(Price.from_usd("3", "4"), "operator")
    settings.enable("operator")
    events = settings.collect_events()[1:]
    topics = ["model.price_changed", "model.disabled", "model.price_changed", "model.enabled"]
    changes = [Envelope(n, e.timestamp, topic, e) for n, (topic, e) in enumerate(zip(topics, events), 1)]
    times = [e.timestamp for e in events]  # when each change was made
    model = CatalogModel()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ensure_schema(conn, [model])
        async with conn.cursor() as cur:
            await model.apply(cur, physical_tables(model, 1), changes)
            await model.apply(cur, physical_tables(model, 1), changes)  # applied again: nothing changes
        at = catalog.overrides_at
        assert await at(conn, times[0] - timedelta(microseconds=1)) == {}
        assert await at(conn, times[0]) == {"acme/a": (Price.from_usd("1", "2"), None)}
        assert await at(conn, times[1]) == {"acme/a": (Price.from_usd("1", "2"), False)}
        assert await at(conn, times[2]) == {"acme/a": (Price.from_usd("3", "4"), False)}
        assert await at(conn, times[3]) == {"acme/a": (Price.from_usd("3", "4"), True)}
        assert await at(conn, times[3]) == await catalog.overrides(conn)


async def test_an_added_model_is_kept_with_its_price_and_switched_on_over_older_changes(database_url):
    settings = ModelSettings(model_id="acme/new")
    settings.change_price(Price.from_usd("9", "9"), "operator")  # when mesh.toml declared an acme/new, say
    settings.disable("operator")
    price = Price.from_usd("0.25", "0.75", "0.1")
    settings.add("acme", "gpt-new", price, 256, 32_768, "operator", "token", providers={"acme"}, taken=False)
    settings.change_price(Price.from_usd("0.5", "1"), "operator")
    events = settings.collect_events()[1:]
    topics = ["model.price_changed", "model.disabled", "model.added", "model.price_changed"]
    now = datetime.now(timezone.utc)
    changes = [Envelope(n, now, topic, e) for n, (topic, e) in enumerate(zip(topics, events), 1)]
    model = CatalogModel()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ensure_schema(conn, [model])
        async with conn.cursor() as cur:
            await model.apply(cur, physical_tables(model, 1), changes[:3])
            assert await catalog.overrides(conn) == {"acme/new": (price, True)}  # the older changes are replaced
            await model.apply(cur, physical_tables(model, 1), changes[3:])
        (added,) = await catalog.added(conn)
        assert added == catalog.AddedModel("acme/new", "acme", "gpt-new", price, 256, 32_768)  # as added
        assert await catalog.overrides(conn) == {"acme/new": (Price.from_usd("0.5", "1"), True)}  # as it is now
