"""Projections never wedge: an event a read model cannot apply is quarantined, the rest goes on, retry after a fix.

Real nats-server and PostgreSQL; the bad events are put on the stream the way a buggy or older writer would:
a copy of a real event's message with one field changed, published with the stream's own headers."""

from __future__ import annotations

import asyncio
import json
import uuid

import msgspec

from commands.accounts import AccountCommands
from commands.keys import KeyCommands
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, aggregate_subject
from gateway.usage import UsagePublisher
from projections.columns import CHUNK_ROWS
from projections.directory_projection import Directory
from projections.quarantine import quarantined, retry
from projections.readmodel import ensure_schema
from projections.runner import ProjectionRunner
from projections.source import REPLAY_BATCH, StreamSource
from tests.conftest import TEST_KDF
from tests.integration.test_projections import BILLING, LOGS, balances, seed, usage
from tests.integration.test_projections import env  # noqa: F401  (the fixture: NATS, PostgreSQL, the app)

DIRECTORY = Directory()


async def inject(nc, stream: str, like_position: int, topic: str, **changes) -> int:
    """Publish a copy of the event at `like_position` as a new aggregate, with `changes` to its body."""
    original = await nc.jetstream().get_msg(stream, like_position)
    assert original.headers[HEADER_TOPIC] == topic
    body = json.loads(original.data)
    body.update(changes)
    aggregate = uuid.uuid4()
    headers = {HEADER_TOPIC: topic, HEADER_ORIGINATOR_ID: str(aggregate), HEADER_ORIGINATOR_VERSION: "1"}
    ack = await nc.jetstream().publish(aggregate_subject(stream, aggregate), json.dumps(body).encode(), headers=headers)
    return ack.seq


async def rows(pool, sql: str, *args):
    async with pool.connection() as conn:
        return await (await conn.execute(sql, args)).fetchall()


async def test_an_event_the_directory_cannot_apply_is_quarantined_and_the_rest_applies(env):
    nc, pool, app, stream = env
    accounts, keys = AccountCommands(app, password_kdf=TEST_KDF), KeyCommands(app)
    first = await asyncio.to_thread(accounts.sign_up, "first@example.com", "long enough")
    key = await asyncio.to_thread(keys.create, first.account_id, "k", 10**12, None)
    # PostgreSQL text cannot hold NUL; numeric(40, 0) cannot hold 10**45; a body without its fields cannot decode.
    nul = await inject(
        nc, stream, first.position - 1, "account.registered", email="evil\u0000@a.io", token_hash=uuid.uuid4().hex
    )
    huge = await inject(nc, stream, key.position, "key.created", spend_cap=10**45, key_hash=uuid.uuid4().hex)
    broken = await inject(nc, stream, first.position - 1, "account.registered", email=None)
    later = await asyncio.to_thread(accounts.sign_up, "later@example.com", "long enough")

    runner = ProjectionRunner(DIRECTORY, StreamSource(nc, stream), pool)
    assert await runner.catch_up() == later.position
    emails = {r[0] for r in await rows(pool, "select email from accounts")}
    assert emails == {"first@example.com", "later@example.com"}  # the later signup applied
    async with pool.connection() as conn:
        set_aside = await quarantined(conn)
    assert [(q.read_model, q.position, q.event_name) for q in set_aside] == [
        ("directory", nul, "account.registered"),
        ("directory", huge, "key.created"),
        ("directory", broken, "account.registered"),
    ]
    assert "NUL" in set_aside[0].error and "\x00" not in set_aside[0].error
    assert "NumericValueOutOfRange" in set_aside[1].error

    # A restart resumes after them: nothing applied twice, nothing quarantined twice, new events apply.
    again = await asyncio.to_thread(accounts.sign_up, "again@example.com", "long enough")
    restarted = ProjectionRunner(DIRECTORY, StreamSource(nc, stream), pool)
    assert await restarted.catch_up() == again.position
    assert len(await rows(pool, "select 1 from accounts")) == 3
    assert len(await rows(pool, "select 1 from projection_quarantine")) == 3

    # Retry before a fix: all still fail and stay. Then fix the cause of one (a wider column) and retry.
    source = StreamSource(nc, stream)
    assert await retry(DIRECTORY, source, pool) == (0, 3)
    async with pool.connection() as conn:
        for table in ("api_keys", "api_key_states"):  # the key's row and its settings kept per change
            await conn.execute(f"drop view {table}")
            await conn.execute(f"alter table {table}_g1 alter column spend_cap type numeric")
            await conn.execute(f"create view {table} as select * from {table}_g1")
    seen = []
    assert await retry(DIRECTORY, source, pool, lambda item, error: seen.append((item.position, error))) == (1, 2)
    assert [p for p, error in seen if error is None] == [huge]
    assert await rows(pool, "select spend_cap from api_keys where spend_cap > 10^40") == [(10**45,)]
    async with pool.connection() as conn:
        assert [q.position for q in await quarantined(conn)] == [nul, broken]
    assert await retry(DIRECTORY, source, pool) == (0, 2)  # a retry never applies an event twice
    assert len(await rows(pool, "select 1 from api_keys")) == 2


async def test_usage_postgresql_refuses_in_a_batch_written_by_chunks_is_quarantined_and_the_rest_applies(env, tmp_path):
    """Billing and logs write a batch's usage a chunk per statement, in a pipeline: one event PostgreSQL refuses (a
    NUL in its model's name), in the second chunk, is quarantined by each, and every other request of the batch,
    before and after it, is billed and logged once."""
    nc, pool, app, stream = env
    async with pool.connection() as conn:
        await ensure_schema(conn, [LOGS])
    publisher = UsagePublisher(nc, stream, tmp_path / "spool.jsonl")
    expected = await seed(app, publisher, accounts=1, usages=CHUNK_ROWS + 50, duplicates=0)
    account = next(iter(expected))
    bad = msgspec.structs.replace(usage(account, 7), model="evil\u0000model")
    await publisher.publish(bad)
    for cost in range(1, 21):
        await publisher.publish(usage(account, cost))
        expected[account] -= cost
    source = StreamSource(nc, stream)
    head = await source.head()
    for model in (BILLING, LOGS):
        assert await ProjectionRunner(model, source, pool, batch_size=REPLAY_BATCH).step() == head  # one batch
    assert await balances(pool) == expected
    for table in ("usage_recent", "logs"):
        assert await rows(pool, f"select count(*) from {table}") == [(CHUNK_ROWS + 70,)]
    async with pool.connection() as conn:
        set_aside = await quarantined(conn)
    assert sorted((q.read_model, q.event_name) for q in set_aside) == [
        ("billing", "usage.recorded"),
        ("logs", "usage.recorded"),
    ]
    assert len({q.position for q in set_aside}) == 1
