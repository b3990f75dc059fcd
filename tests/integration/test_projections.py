"""Projections on a real nats-server and PostgreSQL: exactly once across crashes, batching, rebuild and swap."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import datetime, timezone

import msgspec
import nats
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from commands import event_log
from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.stream import ensure_stream
from domain.events import USAGE_SUBJECT_EVENTS, log_subjects, usage_subject
from domain.usage import UsageRecorded
from gateway.usage import UsagePublisher
from projections.billing_projection import Billing
from projections.catalog import CatalogModel
from projections.columns import CHUNK_ROWS
from projections.directory_projection import Directory
from projections.logs import Logs
from projections.readmodel import ensure_schema, position_of
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.source import REPLAY_BATCH, StreamSource

from tests.conftest import TEST_KDF

BILLING = Billing()
DIRECTORY = Directory()
CATALOG = CatalogModel()
LOGS = Logs()


class Crash(Exception):
    """Stands in for the process dying after the rows are written and before the commit."""


@pytest.fixture
def spool_path(tmp_path):
    return tmp_path / "spool.jsonl"


@pytest.fixture
async def env(nats_url, database_url, stream_name):
    nc = await nats.connect(nats_url)
    await ensure_stream(nc, stream_name)
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
    await pool.open()
    async with pool.connection() as conn:
        await ensure_schema(conn, [BILLING, DIRECTORY])
    app = await asyncio.to_thread(MeshApplication, nats_url, stream_name)
    yield nc, pool, app, stream_name
    await asyncio.to_thread(app.close)
    await pool.close()
    await nc.close()


def usage(account_id: uuid.UUID, cost: int, trace_id: uuid.UUID | None = None) -> UsageRecorded:
    return UsageRecorded(
        trace_id=trace_id or uuid.uuid4(),
        account_id=account_id,
        key_id=uuid.uuid4(),
        model="m",
        requested_model="m",
        provider="p",
        prompt_tokens=cost,
        completion_tokens=1,
        prompt_per_1k=1000,
        completion_per_1k=0,
        cost=cost,
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=1,
    )


async def seed(
    app: MeshApplication, publisher: UsagePublisher, accounts: int = 3, usages: int = 300, duplicates: int = 30
) -> dict[uuid.UUID, int]:
    """Sign up accounts, grant credits and publish usage (some twice); return the expected balances."""
    commands = AccountCommands(app, password_kdf=TEST_KDF)
    stream = publisher.stream
    expected: dict[uuid.UUID, int] = {}
    for i in range(accounts):
        session = await asyncio.to_thread(
            commands.sign_up, f"user{i}-{uuid.uuid4().hex[:6]}@example.com", "long enough"
        )
        await asyncio.to_thread(commands.grant_credits, session.account_id, 10**15, "seed", "test")
        expected[session.account_id] = 10**15
    rng = random.Random(7)
    published = []
    for _ in range(usages):
        account_id = rng.choice(list(expected))
        event = usage(account_id, rng.randint(0, 10**9))
        published.append(event)
        expected[account_id] -= event.cost
        await publisher.publish(event)
    for event in rng.sample(published, duplicates):
        # the same trace id again, past JetStream's dedup (a different message id): counted once anyway
        await publisher.nc.jetstream().publish(
            usage_subject(stream, event.account_id),
            msgspec.json.encode(event),
            headers={
                "Mesh-Topic": "usage.recorded",
                "Mesh-Originator-Id": str(event.trace_id),
                "Mesh-Originator-Version": "1",
            },
        )
    return expected


async def balances(pool) -> dict[uuid.UUID, int]:
    async with pool.connection() as conn:
        cur = await conn.execute("select account_id, credits - spend from balances")
        return {row[0]: int(row[1]) for row in await cur.fetchall()}


async def applied_on_arrival(publisher: UsagePublisher, pool, expected: dict[uuid.UUID, int], within: float) -> None:
    """Publish a usage event for the first account and wait (at most `within` seconds) for its balance to show it."""
    account = next(iter(expected))
    await publisher.publish(usage(account, 5))
    deadline = asyncio.get_running_loop().time() + within
    while (await balances(pool))[account] != expected[account] - 5:
        assert asyncio.get_running_loop().time() < deadline, "the usage was not applied on arrival"
        await asyncio.sleep(0.01)


async def test_a_crash_between_rows_and_commit_applies_nothing_and_resume_is_exact(env, spool_path):
    nc, pool, app, stream = env
    expected = await seed(app, UsagePublisher(nc, stream, spool_path))
    source = StreamSource(nc, stream)
    head = await source.head()
    crashes = 0

    async def crash_on_second_batch(messages):
        nonlocal crashes
        if crashes == 0 and messages[0].position > 1:
            crashes += 1
            raise Crash()

    runner = ProjectionRunner(BILLING, source, pool, batch_size=50, before_commit=crash_on_second_batch)
    assert await runner.step() == 50
    with pytest.raises(Crash):
        await runner.step()
    async with pool.connection() as conn:
        position, _ = await position_of(conn, BILLING)
        cur = await conn.execute("select count(*) from usage_recent")
        rows_after_crash = (await cur.fetchone())[0]
    assert position == 50  # the crashed batch left no position change...
    assert rows_after_crash <= 50  # ...and none of its rows

    # a fresh runner (a restarted process) resumes from the stored position
    fresh = ProjectionRunner(BILLING, source, pool, batch_size=50)
    assert await fresh.catch_up() == head
    assert await balances(pool) == expected
    # running again changes nothing
    assert await fresh.step() == 0
    assert await balances(pool) == expected


async def test_two_runners_of_one_model_never_apply_a_batch_twice(env, spool_path):
    nc, pool, app, stream = env
    expected = await seed(app, UsagePublisher(nc, stream, spool_path), usages=400, duplicates=0)
    source = StreamSource(nc, stream)
    runners = [ProjectionRunner(BILLING, source, pool, batch_size=25) for _ in range(2)]
    head = await source.head()
    while True:
        await asyncio.gather(*(r.step() for r in runners))
        async with pool.connection() as conn:
            if (await position_of(conn, BILLING))[0] >= head:
                break
    assert await balances(pool) == expected


async def test_catch_up_uses_batches_not_a_transaction_per_event(env, spool_path):
    nc, pool, app, stream = env
    await seed(app, UsagePublisher(nc, stream, spool_path), accounts=1, usages=500, duplicates=0)
    source = StreamSource(nc, stream)
    commits = 0

    async def count(_messages):
        nonlocal commits
        commits += 1

    runner = ProjectionRunner(BILLING, source, pool, batch_size=1000, before_commit=count)
    head = await runner.source.head()
    assert await runner.catch_up() == head
    assert head > 500 and commits == 1


async def test_a_runner_reads_the_next_batch_while_it_applies_one_and_applies_each_event_once(env, spool_path):
    nc, pool, app, stream = env
    expected = await seed(app, UsagePublisher(nc, stream, spool_path), usages=300, duplicates=0)
    source = StreamSource(nc, stream)
    fetched = counting(source)
    ahead = []

    async def look_ahead(messages):
        # the rows of this batch are written, not committed: the next batch is being read (or was read) already
        ahead.append(runner._prefetch is not None and runner._prefetch[0] == messages[-1].position + 1)

    runner = ProjectionRunner(BILLING, source, pool, batch_size=40, before_commit=look_ahead)
    head = await source.head()
    assert await runner.catch_up() == head
    assert ahead[:-1] and all(ahead[:-1])  # every batch but the last had one after it
    assert await balances(pool) == expected
    positions = [m.position for batch in fetched[None] for m in batch]
    assert sorted(set(positions)) == list(range(1, head + 1))  # every message read, each batch once
    assert len(positions) == head


async def test_rebuild_fills_new_tables_while_the_old_serve_then_swaps(env, spool_path, database_url):
    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher)
    source = StreamSource(nc, stream)
    live = ProjectionRunner(BILLING, source, pool)
    await live.catch_up()
    assert await balances(pool) == expected

    reader = psycopg.connect(database_url, autocommit=True)
    seen_during_rebuild = []

    def progress(position, head):
        # while the new generation is being built, readers still get the complete old answer
        rows = reader.execute("select account_id, credits - spend from balances").fetchall()
        seen_during_rebuild.append({row[0]: int(row[1]) for row in rows})

    generation = await rebuild(BILLING, nc, pool, stream, progress)
    reader.close()
    assert generation == 2
    assert seen_during_rebuild and all(seen == expected for seen in seen_during_rebuild)
    assert await balances(pool) == expected
    async with pool.connection() as conn:
        cur = await conn.execute("select count(*) from information_schema.tables where table_name like 'key_spend_g%%'")
        assert (await cur.fetchone())[0] == 1  # the old generation's tables are gone

    # the live runner follows the swap and keeps applying new events to generation 2
    account_id = next(iter(expected))
    await publisher.publish(usage(account_id, 123))
    expected[account_id] -= 123
    await live.catch_up()
    assert await balances(pool) == expected


def counting(source: StreamSource) -> dict[str | None, list[list]]:
    """Record what each direct get of `source` brought, per subject filter (None: the whole stream)."""
    fetched: dict[str | None, list[list]] = {}
    fetch = source._fetch

    async def counted(start, limit, timeout, subjects=None):
        messages, more = await fetch(start, limit, timeout, subjects)
        fetched.setdefault(subjects, []).append(messages)
        return messages, more

    source._fetch = counted
    return fetched


async def test_runners_of_the_same_subjects_share_reads_and_store_positions_only_when_it_matters(env, spool_path):
    """The runners of one process that read the same subjects share each read (directory and catalog: aggregate
    events); billing, which reads usage too, reads the whole stream on its own."""
    nc, pool, app, stream = env
    async with pool.connection() as conn:
        await ensure_schema(conn, [CATALOG])
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=1, usages=200, duplicates=0)
    source = StreamSource(nc, stream)
    fetched = counting(source)
    billing = ProjectionRunner(BILLING, source, pool)
    directory = ProjectionRunner(DIRECTORY, source, pool, checkpoint_every=3600)
    catalog = ProjectionRunner(CATALOG, source, pool, checkpoint_every=3600)
    head = await source.head()
    await asyncio.gather(billing.step(), directory.step(), catalog.step())
    aggregates = log_subjects(stream, DIRECTORY.topics)
    assert aggregates == log_subjects(stream, CATALOG.topics) and aggregates is not None
    assert len(fetched[aggregates]) == 1  # one read from JetStream served both read models of aggregate events
    assert len(fetched[None]) == 1  # billing's
    assert billing.position == directory.position == catalog.position == head
    assert await balances(pool) == expected

    # usage events mean nothing to the directory: it reads none, moves on in memory and stores its position later
    account_id = next(iter(expected))
    for _ in range(3):
        await publisher.publish(usage(account_id, 7))
    await asyncio.gather(billing.step(), directory.step())
    assert directory.position == billing.position == head + 3
    assert all(m.topic not in USAGE_SUBJECT_EVENTS for batch in fetched[aggregates] for m in batch)
    async with pool.connection() as conn:
        assert (await position_of(conn, DIRECTORY))[0] == head
        assert (await position_of(conn, BILLING))[0] == head + 3
    directory.wake()  # someone waits for the directory: it stores where it is
    assert await directory.step() == 0
    async with pool.connection() as conn:
        assert (await position_of(conn, DIRECTORY))[0] == head + 3


async def test_a_read_model_of_aggregate_events_reads_no_usage_and_still_reaches_the_head(env, spool_path):
    """The directory receives only aggregate events, across batches and up to the head whatever was appended
    last; a crash between its rows and the commit of a batch that covered usage it skipped leaves nothing, and the
    resumed runner applies each event once."""
    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=4, usages=300, duplicates=0)
    account_id = next(iter(expected))
    for _ in range(20):  # the log ends with usage
        await publisher.publish(usage(account_id, 3))
    source = StreamSource(nc, stream)
    fetched = counting(source)
    head = await source.head()
    crashes = 0

    async def crash_on_second_batch(messages):
        nonlocal crashes
        if crashes == 0 and messages[0].position > 1:
            crashes += 1
            raise Crash()

    runner = ProjectionRunner(DIRECTORY, source, pool, batch_size=3, before_commit=crash_on_second_batch)
    assert await runner.step() == 3  # the first three account events, positions 1..3
    with pytest.raises(Crash):
        await runner.step()
    async with pool.connection() as conn:
        assert (await position_of(conn, DIRECTORY))[0] == 3
    fresh = ProjectionRunner(DIRECTORY, source, pool, batch_size=3)
    assert await fresh.catch_up() == head
    async with pool.connection() as conn:
        assert (await position_of(conn, DIRECTORY))[0] == head  # stored, though the last events are usage
        cur = await conn.execute("select account_id from accounts")
        assert {row[0] for row in await cur.fetchall()} == set(expected)
    received = [m for batch in fetched[log_subjects(stream, DIRECTORY.topics)] for m in batch]
    assert received and not [m for m in received if m.topic in USAGE_SUBJECT_EVENTS]
    assert len(received) < head / 10  # the 320 usage events never crossed the wire

    # only usage after that: the position still reaches the new head, with no message read
    for _ in range(5):
        await publisher.publish(usage(account_id, 3))
    reads = len(received)
    assert await fresh.catch_up() == head + 5
    assert sum(len(batch) for batch in fetched[log_subjects(stream, DIRECTORY.topics)]) == reads
    async with pool.connection() as conn:
        assert (await position_of(conn, DIRECTORY))[0] == head + 5


async def test_read_your_writes_holds_for_a_read_model_that_skips_usage(env, spool_path):
    """The worker's directory, reading aggregate events only, reaches the position a command wrote however much
    usage is around it, and its stored position follows usage-only appends to the head."""
    from api.projection_worker import ProjectionWorker, ensure_read_models
    from commands.keys import KeyCommands
    from projections.runner import wait_for_position

    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=1, usages=50, duplicates=0)
    account_id = next(iter(expected))
    await ensure_read_models(pool)
    worker = ProjectionWorker(nc, pool, stream, log_bodies=False, retention_days=90)
    await worker.follow_appends()
    stop = asyncio.Event()
    runs = [asyncio.create_task(runner.run(stop)) for runner in worker.runners]
    try:
        for _ in range(50):
            await publisher.publish(usage(account_id, 1))
        key = await asyncio.to_thread(KeyCommands(app).create, account_id, "k", None, None)
        for _ in range(50):
            await publisher.publish(usage(account_id, 1))
        assert await wait_for_position(pool, DIRECTORY, key.position)
        async with pool.connection() as conn:
            cur = await conn.execute("select label from api_keys where key_id = %s", (key.key.id,))
            assert await cur.fetchone() == ("k",)
        head = await StreamSource(nc, stream).head()
        assert await wait_for_position(pool, DIRECTORY, head)  # within its checkpoint interval
    finally:
        stop.set()
        await asyncio.gather(*runs)


async def test_one_batch_counts_each_trace_id_once_in_every_total(env, spool_path):
    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=1, usages=0, duplicates=0)
    account_id = next(iter(expected))
    first, second = usage(account_id, 5), usage(account_id, 11)
    failed = msgspec.structs.replace(usage(account_id, 0), key_id=first.key_id, status="error", http_status=502)
    for event in (first, second, failed):
        await publisher.publish(event)
    # `first` again in the same batch, past JetStream's dedup (another message id)
    await nc.jetstream().publish(
        usage_subject(stream, account_id),
        msgspec.json.encode(first),
        headers={
            "Mesh-Topic": "usage.recorded",
            "Mesh-Originator-Id": str(first.trace_id),
            "Mesh-Originator-Version": "1",
        },
    )
    runner = ProjectionRunner(BILLING, StreamSource(nc, stream), pool)
    await runner.catch_up()
    assert await balances(pool) == {account_id: expected[account_id] - 16}
    async with pool.connection() as conn:
        cur = await conn.execute("select count(*) from usage_recent")
        assert (await cur.fetchone())[0] == 3
        cur = await conn.execute(
            "select key_id, requests, errors, prompt_tokens, completion_tokens, spend from key_spend"
        )
        totals = {row[0]: tuple(int(v) for v in row[1:]) for row in await cur.fetchall()}
    assert totals == {first.key_id: (2, 1, 5, 2, 5), second.key_id: (1, 0, 11, 1, 11)}


async def test_a_batch_written_a_chunk_at_a_time_counts_each_trace_id_once(env, spool_path):
    """A batch of more usage than CHUNK_ROWS goes to PostgreSQL a chunk per statement, in a pipeline: requests
    published twice, their copies in another chunk than the first, are billed and logged once."""
    nc, pool, app, stream = env
    async with pool.connection() as conn:
        await ensure_schema(conn, [LOGS])
    requests = CHUNK_ROWS + 150
    expected = await seed(app, UsagePublisher(nc, stream, spool_path), usages=requests, duplicates=150)
    source = StreamSource(nc, stream)
    head = await source.head()
    for model in (BILLING, LOGS):
        assert await ProjectionRunner(model, source, pool, batch_size=REPLAY_BATCH).step() == head  # one batch
    assert await balances(pool) == expected
    async with pool.connection() as conn:
        for table in ("usage_recent", "logs"):
            cur = await conn.execute(f"select count(*), count(distinct trace_id) from {table}")
            assert await cur.fetchone() == (requests, requests)
        cur = await conn.execute("select sum(requests) from key_spend")
        assert (await cur.fetchone())[0] == requests


async def test_the_worker_catches_up_from_far_behind_as_a_replay(env, spool_path, monkeypatch):
    """Before it serves, the worker applies the log up to the head in replay batches read by consumer (one per
    subject filter, let go at the end); every read model reaches the head with the same balances, usage published
    twice counted once."""
    from api import projection_worker
    from api.projection_worker import ProjectionWorker, ensure_read_models
    from projections import runner, source

    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=2, usages=60, duplicates=10)
    await ensure_read_models(pool)
    for module in (projection_worker, runner, source):  # many batches, each of every read model's subjects
        monkeypatch.setattr(module, "REPLAY_BATCH", 7)
    by_consumer = consumer_reads(monkeypatch)
    worker = ProjectionWorker(nc, pool, stream, log_bodies=False, retention_days=90)
    await worker.catch_up()
    assert by_consumer and {limit for _, limit in by_consumer} == {7}
    assert await balances(pool) == expected
    head = await StreamSource(nc, stream).head()
    async with pool.connection() as conn:
        for runner in worker.runners:
            position, _ = await position_of(conn, runner.model)
            assert position == head, runner.model.name
    assert (await nc.jetstream().stream_info(stream)).state.consumer_count == 0


def consumer_reads(monkeypatch) -> list[tuple[int, int]]:
    """The (start, limit) of every read by consumer from now on."""
    reads: list[tuple[int, int]] = []
    read = event_log.RangeReader.read

    async def counted(self, start: int, limit: int, timeout: float = event_log.TIMEOUT):
        reads.append((start, limit))
        return await read(self, start, limit, timeout)

    monkeypatch.setattr(event_log.RangeReader, "read", counted)
    return reads


async def test_a_runner_behind_the_head_reads_replay_batches_by_consumer_and_small_ones_at_the_head(
    env, spool_path, monkeypatch
):
    """Natural batches under load: a runner whose read left more right after it reads a replay's batch next, by
    consumer; back at the head it reads its own small batches by direct get, and lets the consumer go."""
    from projections import runner, source

    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=1, usages=40, duplicates=0)
    for module in (runner, source):
        monkeypatch.setattr(module, "REPLAY_BATCH", 10)
    by_consumer = consumer_reads(monkeypatch)
    live = ProjectionRunner(BILLING, StreamSource(nc, stream), pool, batch_size=3)
    await live.step()  # 3 of them, more right after: the next 10 read ahead, by consumer
    assert live.full and by_consumer == [(live.position + 1, 10)]
    head = await live.catch_up()
    assert by_consumer and {limit for _, limit in by_consumer} == {10}
    assert await balances(pool) == expected
    assert (await nc.jetstream().stream_info(stream)).state.consumer_count == 1  # until a read at the head
    account_id = next(iter(expected))
    await publisher.publish(usage(account_id, 1))
    reads = len(by_consumer)
    assert await live.step() == 1 and len(by_consumer) == reads  # at the head: by direct get, 3 at most
    assert live.position == head + 1 and not live.full
    assert (await nc.jetstream().stream_info(stream)).state.consumer_count == 0


async def test_an_idle_worker_applies_usage_as_it_arrives(env, spool_path):
    """The worker hears what is appended: an idle runner reads a usage event when it arrives, not at its next
    poll (here, after the quick looks of its first 15 ms, an hour away)."""
    from api.projection_worker import ProjectionWorker, ensure_read_models

    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=1, usages=0, duplicates=0)
    await ensure_read_models(pool)
    worker = ProjectionWorker(nc, pool, stream, log_bodies=False, retention_days=90)
    await worker.catch_up()
    await worker.follow_appends()
    stop = asyncio.Event()
    runs = [asyncio.create_task(runner.run(stop, max_idle=3600)) for runner in worker.runners]
    try:
        # idle for 6 s: the looks came at 5 and 15 ms, and the next is an hour later
        await asyncio.sleep(6)
        await applied_on_arrival(publisher, pool, expected, within=3)
    finally:
        stop.set()
        await asyncio.gather(*runs)


async def test_an_idle_worker_waits_for_notices_and_still_says_it_is_current(env, spool_path):
    """Caught up, the worker neither polls the log nor PostgreSQL: its looks for a lost notice back off to
    IDLE_LOOK, and each second one statement marks the read models checked (what an answer's "as of" says), with
    one look for webhook deliveries resent by hand. It still applies what arrives at once."""
    from api.projection_worker import ProjectionWorker, ensure_read_models
    from api.read_models import FOLLOWERS, LOG_BODIES
    from api.webhook_delivery import WebhookOptions

    nc, pool, app, stream = env
    publisher = UsagePublisher(nc, stream, spool_path)
    expected = await seed(app, publisher, accounts=1, usages=5, duplicates=0)
    await ensure_read_models(pool)
    worker = ProjectionWorker(
        nc, pool, stream, log_bodies=False, retention_days=90, webhooks=WebhookOptions(signing_key="k")
    )
    await worker.catch_up()
    await worker.follow_appends()
    stop = asyncio.Event()
    run = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.sleep(1.5)  # the looks right after catching up
        sent, checkouts = nc.stats["out_msgs"], pool.get_stats()["requests_num"]
        await asyncio.sleep(3)
        sent, checkouts = nc.stats["out_msgs"] - sent, pool.get_stats()["requests_num"] - checkouts
        # a look or two per read model (each a direct get, the stream info before it shared) and two connections a
        # second (5-6 requests and 12 connections here); polling every quarter of a second was about 70 and 100
        assert sent <= 3 * len(FOLLOWERS), sent
        assert checkouts <= 2 * len(FOLLOWERS) + 2 * 3 + 2, checkouts
        async with pool.connection() as conn:
            cur = await conn.execute(
                "select name, extract(epoch from now() - checked_at)::float8 from projection_positions"
            )
            ages = {name: age for name, age in await cur.fetchall() if not name.startswith(LOG_BODIES.name)}
        assert len(ages) == len(FOLLOWERS) and max(ages.values()) < 1.5, ages  # (bodies are not logged here)

        await applied_on_arrival(publisher, pool, expected, within=1)
    finally:
        stop.set()
        await run
