"""The logs read model on a real nats-server and PostgreSQL: every request once, exact filters and keyset
pages, retention by whole months that never touches money, and rebuilds that leave billing alone."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import nats
import pytest
from psycopg_pool import AsyncConnectionPool

from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.stream import ensure_stream
from domain.events import usage_subject
from domain.usage import Api, UsageRecorded
from gateway.usage import UsagePublisher
from projections import billing, logs
from projections.billing_projection import Billing
from projections.directory_projection import Directory
from projections.logs import LogFilter, Logs
from projections.readmodel import ensure_schema
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.source import StreamSource
from projections.spend_history import spend_history

from tests.conftest import TEST_KDF

BILLING, DIRECTORY, LOGS = Billing(), Directory(), Logs()
NOW = datetime.now(timezone.utc)


@pytest.fixture
async def env(nats_url, database_url, stream_name, tmp_path):
    nc = await nats.connect(nats_url)
    await ensure_stream(nc, stream_name)
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await ensure_schema(conn, [BILLING, DIRECTORY, LOGS])
    app = await asyncio.to_thread(MeshApplication, nats_url, stream_name)
    yield nc, pool, app, UsagePublisher(nc, stream_name, tmp_path / "spool.jsonl")
    await asyncio.to_thread(app.close)
    await pool.close()
    await nc.close()


async def accounts(app, n: int) -> list[uuid.UUID]:
    commands = AccountCommands(app, password_kdf=TEST_KDF)
    made = []
    for i in range(n):
        session = await asyncio.to_thread(
            commands.sign_up, f"logs{i}-{uuid.uuid4().hex[:6]}@example.com", "long enough"
        )
        await asyncio.to_thread(commands.grant_credits, session.account_id, 10**15, "seed", "test")
        made.append(session.account_id)
    return made


def usage(account_id: uuid.UUID, when: datetime, rng: random.Random, keys: list[uuid.UUID], **fields) -> UsageRecorded:
    failed = rng.random() < 0.1
    prompt, completion = rng.randint(1, 500), 0 if failed else rng.randint(1, 500)
    return UsageRecorded(
        **{
            "trace_id": uuid.uuid4(),
            "account_id": account_id,
            "key_id": rng.choice(keys),
            "model": rng.choice(["acme/a", "acme/b", "other/c"]),
            "requested_model": None,
            "provider": "acme",
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "prompt_per_1k": 500_000_000_000,
            "completion_per_1k": 1_500_000_000_000,
            "cost": 0 if failed else prompt * 500_000_000 + completion * 1_500_000_000,
            "status": "error" if failed else "ok",
            "http_status": 502 if failed else 200,
            "timestamp": when,
            "latency_us": rng.randint(1_000, 3_000_000),
            "upstream_us": 900,
            "first_token_us": None,
            "cached_prompt_tokens": prompt // 3,
            "reasoning_tokens": completion // 4,
            "error": "upstream said no" if failed else None,
            **fields,
        }
    )


def with_provider(e: UsageRecorded) -> UsageRecorded:
    return msgspec.structs.replace(e, provider=e.model.split("/")[0])


async def publish_again(nc, stream: str, event: UsageRecorded) -> None:
    """The same event past JetStream's duplicate window (another message id), as a replayed spool can."""
    await nc.jetstream().publish(
        usage_subject(stream, event.account_id),
        msgspec.json.encode(event),
        headers={
            "Mesh-Topic": "usage.recorded",
            "Mesh-Originator-Id": str(event.trace_id),
            "Mesh-Originator-Version": "1",
        },
    )


async def catch_up(nc, pool, stream: str, *models) -> None:
    for model in models:
        await ProjectionRunner(model, StreamSource(nc, stream), pool).catch_up()


async def walk(pool, f: LogFilter, limit: int) -> list[logs.LogRow]:
    """Every entry by following the keyset cursor, `limit` at a time."""
    seen, after = [], None
    async with pool.connection() as conn:
        while True:
            rows = await logs.page(conn, f, limit, after)
            seen += rows
            if len(rows) < limit:
                return seen
            after = (rows[-1].time, rows[-1].trace_id)


async def walk_newer(pool, f: LogFilter, limit: int, oldest: list[logs.LogRow]) -> list[logs.LogRow]:
    """From the page `oldest` back up to the newest entry by the `before` cursor (the Logs page's Newer),
    `limit` at a time: every entry, newest first."""
    seen, first = list(oldest), oldest
    async with pool.connection() as conn:
        while first:
            first = await logs.page(conn, f, limit, before=(first[0].time, first[0].trace_id))
            seen = first + seen
    return seen


async def test_each_request_is_logged_once_with_every_field(env):
    nc, pool, app, publisher = env
    (account_id,) = await accounts(app, 1)
    rng = random.Random(1)
    template = uuid.uuid4()
    first = msgspec.structs.replace(
        usage(account_id, NOW, rng, [uuid.uuid4()]),
        status="ok",
        http_status=200,
        error=None,
        stream=True,
        first_token_us=700,
        cache_write_tokens=9,
        template_id=template,
        template_version=3,
        requested_model="a",
        api=Api.MESSAGES,
    )
    second = usage(account_id, NOW + timedelta(seconds=1), rng, [uuid.uuid4()])
    for event in (first, second):
        await publisher.publish(event)
    await publish_again(nc, publisher.stream, first)
    await catch_up(nc, pool, publisher.stream, LOGS)
    async with pool.connection() as conn:
        rows = await logs.page(conn, LogFilter(account_id=account_id), 10)
        one = await logs.entry(conn, first.trace_id, account_id)
        other_account = await logs.entry(conn, first.trace_id, uuid.uuid4())
    assert [r.trace_id for r in rows] == [second.trace_id, first.trace_id]  # once each, newest first
    assert one == rows[1] and other_account is None
    assert (
        one.prompt_tokens,
        one.completion_tokens,
        one.cost,
        one.cached_prompt_tokens,
        one.cache_write_tokens,
        one.reasoning_tokens,
    ) == (
        first.prompt_tokens,
        first.completion_tokens,
        first.cost,
        first.cached_prompt_tokens,
        9,
        first.reasoning_tokens,
    )
    assert (one.template_id, one.template_version, one.first_token_us, one.stream, one.requested_model) == (
        template,
        3,
        700,
        True,
        "a",
    )
    assert one.key_label is None  # a key the directory does not know
    assert (one.api, rows[0].api) == ("messages", None)  # an event from before `api` was recorded: null


async def test_filters_and_keyset_pages_are_exact(env):
    nc, pool, app, publisher = env
    ids = await accounts(app, 3)
    rng = random.Random(2)
    keys = {a: [uuid.uuid4() for _ in range(3)] for a in ids}
    events = []
    for i in range(240):
        account_id = rng.choice(ids)
        # three months of history, some requests in the same microsecond (the trace id breaks the tie)
        when = NOW - timedelta(days=rng.randint(0, 80), seconds=rng.randint(0, 86_399)) if i % 10 else NOW
        events.append(with_provider(usage(account_id, when, rng, keys[account_id])))
    for event in events:
        await publisher.publish(event)
    await catch_up(nc, pool, publisher.stream, LOGS)
    middle, early = NOW - timedelta(days=40), NOW - timedelta(days=70)
    for account_id in ids:
        mine = sorted(
            (e for e in events if e.account_id == account_id), key=lambda e: (e.timestamp, e.trace_id), reverse=True
        )
        key = keys[account_id][0]
        cases = [
            (LogFilter(), lambda e: True),
            (LogFilter(status="error"), lambda e: e.status != "ok"),
            (LogFilter(status="success"), lambda e: e.status == "ok"),
            (LogFilter(model="acme/b"), lambda e: e.model == "acme/b"),
            (LogFilter(provider="other"), lambda e: e.provider == "other"),
            (LogFilter(key_id=key), lambda e: e.key_id == key),
            (LogFilter(min_latency_ms=1500), lambda e: e.latency_us >= 1_500_000),
            (LogFilter(start=middle), lambda e: e.timestamp >= middle),
            (LogFilter(end=middle), lambda e: e.timestamp < middle),
            (LogFilter(start=early, end=middle), lambda e: early <= e.timestamp < middle),
            (
                LogFilter(start=early, end=middle, status="success", min_latency_ms=10),
                lambda e: early <= e.timestamp < middle and e.status == "ok" and e.latency_us >= 10_000,
            ),
            (
                LogFilter(start=middle, model="acme/a", status="success", key_id=key, min_latency_ms=10),
                lambda e: (
                    e.timestamp >= middle
                    and e.model == "acme/a"
                    and e.status == "ok"
                    and e.key_id == key
                    and e.latency_us >= 10_000
                ),
            ),
        ]
        for f, wanted in cases:
            expected = [e.trace_id for e in mine if wanted(e)]
            f = msgspec.structs.replace(f, account_id=account_id)
            walked = await walk(pool, f, 7)
            assert [r.trace_id for r in walked] == expected, f
            assert [r.trace_id for r in await walk_newer(pool, f, 7, walked[-1:])] == expected, f
            # a cursor later than the window's end (a client may send any): the page starts at the end
            async with pool.connection() as conn:
                late = (NOW + timedelta(days=1), uuid.UUID(int=0))
                assert [r.trace_id for r in await logs.page(conn, f, 500, late)] == expected, f
    everyone = await walk(pool, LogFilter(status="error"), 13)  # the operator's view: every account
    assert sorted(r.trace_id for r in everyone) == sorted(e.trace_id for e in events if e.status != "ok")


async def money(pool, account_ids) -> tuple:
    async with pool.connection() as conn:
        return tuple(
            [
                (
                    await billing.balance_of(conn, a),
                    await spend_history(conn, a, ["model", "key", "day"], None, None),
                    await billing.key_stats(conn, a),
                    await billing.key_stats(conn, a, NOW - timedelta(days=400), NOW + timedelta(days=1)),
                )
                for a in account_ids
            ]
        )


async def test_retention_drops_whole_old_months_of_logs_and_never_money(env):
    nc, pool, app, publisher = env
    ids = await accounts(app, 2)
    rng = random.Random(3)
    keys = {a: [uuid.uuid4()] for a in ids}  # a key belongs to one account
    old = [usage(a, NOW - timedelta(days=200 + i), rng, keys[a]) for i, a in enumerate(ids * 5)]
    recent = [usage(a, NOW - timedelta(minutes=i), rng, keys[a]) for i, a in enumerate(ids * 5)]
    for event in old + recent:
        await publisher.publish(event)
    await catch_up(nc, pool, publisher.stream, BILLING, LOGS)
    before = await money(pool, ids)
    assert sum(b.spend for b, *_ in before) == sum(e.cost for e in old + recent)

    dropped = await logs.trim(pool, LOGS, 90)
    assert dropped and all(name.startswith("logs_g1_p") for name in dropped)
    assert await money(pool, ids) == before
    left = await walk(pool, LogFilter(), 50)
    assert sorted(r.trace_id for r in left) == sorted(e.trace_id for e in recent)
    assert await logs.trim(pool, LOGS, 90) == []  # nothing more to drop


async def test_rebuilding_logs_leaves_billing_untouched_and_the_logs_equal(env):
    nc, pool, app, publisher = env
    ids = await accounts(app, 2)
    rng = random.Random(4)
    # a day apart: two months or more, whose keys and indexes the rebuild builds a month at a time, then adopts
    events = [usage(a, NOW - timedelta(days=i), rng, [uuid.uuid4()]) for i, a in enumerate(ids * 20)]
    for event in events:
        await publisher.publish(event)
    await publish_again(nc, publisher.stream, events[0])
    await catch_up(nc, pool, publisher.stream, BILLING, LOGS)
    before, logged = await money(pool, ids), await walk(pool, LogFilter(), 500)
    assert len(logged) == len(events)
    indexes = await index_definitions(pool, "logs_g1")
    assert len(indexes) == 6  # the primary key and the five the pages read
    assert await rebuild(LOGS, nc, pool, publisher.stream) == 2
    assert await money(pool, ids) == before
    assert await walk(pool, LogFilter(), 500) == logged
    # built after the rows, the new generation's indexes are the old one's, on it and on each month
    assert await index_definitions(pool, "logs_g2") == [i.replace("logs_g1", "logs_g2") for i in indexes]
    async with pool.connection() as conn:
        cur = await conn.execute(
            "select inhrelid::regclass::text from pg_inherits where inhparent = 'logs_g2'::regclass"
        )
        months = [row[0] for row in await cur.fetchall()]
    assert len(months) >= 2
    for month in months:  # each month's own, adopted by the parent's (not built again beside them)
        assert len(await index_definitions(pool, month)) == len(indexes)


async def index_definitions(pool, table: str) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("select indexdef from pg_indexes where tablename = %s order by indexname", (table,))
        return [row[0] for row in await cur.fetchall()]


async def test_bodies_come_from_their_own_stream_and_go_with_retention(env):
    from commands.stream import bodies_stream, ensure_bodies_stream
    from gateway.bodies import BodyPublisher
    from projections.logs import LogBodies

    nc, pool, app, publisher = env
    model = LogBodies()
    async with pool.connection() as conn:
        await ensure_schema(conn, [model])
    await ensure_bodies_stream(nc, publisher.stream, 90)
    bodies = BodyPublisher(nc, publisher.stream)
    account_id = uuid.uuid4()
    old, recent, long = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    bodies.submit(old, account_id, NOW - timedelta(days=200), b'{"messages": "old"}', b'{"answer": 1}')
    bodies.submit(recent, account_id, NOW, b'{"messages": "new"}', None)
    bodies.submit(long, account_id, NOW, b"x" * 300_000, b"y")
    await bodies.flush()
    await nc.flush()
    source = StreamSource(nc, bodies_stream(publisher.stream))
    for _ in range(50):  # core publishes: stored a moment later
        if await source.head() >= 3:
            break
        await asyncio.sleep(0.05)
    await ProjectionRunner(model, source, pool).catch_up()
    async with pool.connection() as conn:
        assert (await logs.bodies_of(conn, old, account_id)).response == '{"answer": 1}'
        cut = await logs.bodies_of(conn, long, account_id)
        assert cut.truncated and len(cut.request) == 256 * 1024
        assert await logs.bodies_of(conn, recent, uuid.uuid4()) is None  # another account's
    assert await logs.trim(pool, model, 90)
    async with pool.connection() as conn:
        assert await logs.bodies_of(conn, old, account_id) is None
        assert (await logs.bodies_of(conn, recent, account_id)).request == '{"messages": "new"}'
