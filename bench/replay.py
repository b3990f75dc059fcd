"""Replay speed: how fast `mesh rebuild` applies the log to each read model, beside how fast the log can be read.

Fills a stream on an embedded nats-server with `--events` events (default 1,000,000) of a realistic mix, made by
the real commands and publisher: accounts signing up, credits granted, top-ups paid, API keys created, and for
each key budget lease cycles (account and key leased, extended, settled) each followed by `--usage-per-lease`
usage events paid by that lease (`UsagePublisher._publish`, the gateway's own frames), over the last 30 days in
the order a gateway appends them (`--shuffled-times`: in any order). Then times a rebuild of
each read model (`projections.rebuild.rebuild`, what `mesh rebuild <model>` runs) into an embedded PostgreSQL,
and prints events/s (stream positions covered per second) beside the reference: the same stream read by direct
get in the rebuild's batches with nothing applied, by the event log's reader (`event_log.read_batch`, which takes
a batch's messages from nats-py before its per-message work; a rebuild's own reads go by consumer instead).

With `--catch-up`, then the projection worker's catch-up before Mesh serves (every read model and the webhook
outbox from position 0, by consumer, 5,000 events a transaction) beside the same runners as the running worker
makes them (a first batch of 1,000 by direct get, then, while a read leaves more right after it, 5,000 by
consumer), twice each way, alternated.

Then the directory at `--usage-factor` times the usage: a second stream holding the same aggregate events (the
first stream's messages copied as stored: subject, headers, body) with that many times the usage between them;
its directory rebuild should take about as long as on the first stream, since it reads aggregate events only.

    python -m bench.replay [--events 1000000] [--usage-per-lease 200] [--usage-factor 10] [--shuffled-times]
                           [--profile FILE] [--catch-up]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import random
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nats
from psycopg_pool import AsyncConnectionPool

from api.cli import settle_garbage_collector
from api.embedded import NatsServer
from api.postgres_server import PostgresServer
from api.projection_worker import ProjectionWorker, ensure_read_models
from api.read_models import READ_MODELS
from commands import event_log
from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.keys import KeyCommands
from commands.leasing import BudgetCommands
from commands.stream import ensure_stream
from commands.topups import TopUpCommands
from domain.credentials import ScryptParams
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, aggregate_subject
from domain.pricing import Price
from domain.usage import UsageRecorded
from gateway.usage import UsagePublisher
from projections.logs import RETENTION_DAYS
from projections.readmodel import ensure_schema
from projections.rebuild import rebuild
from projections.source import StreamSource

STREAM = "REPLAY"
TENFOLD_STREAM = "REPLAYX"
KEYS_PER_ACCOUNT = 5
EVENTS_PER_ACCOUNT = 5_000  # one account per this many events
CHEAP_KDF = ScryptParams(10, 8, 1)  # sign-ups by the thousand: the password hash's cost is not measured here
PRICE = Price(prompt_per_1k=150_000_000, completion_per_1k=600_000_000)
MODELS = ("gpt-4o-mini", "claude-haiku", "gemini-flash", "llama-70b")
DAYS = 30  # usage spread over the last DAYS days
OUT_OF_ORDER_SECONDS = 30  # how far before the one appended ahead of it a usage event may have begun
COMMAND_THREADS = 6  # lease cycles run concurrently, each on its own key
PUBLISH_CHUNK = 1_000
READ_BATCH = 5_000  # the reference's direct-get batch


class UsageTimes:
    """When each usage event began, over the last DAYS days: in the order the stream holds them, as gateways append
    them (a few seconds out of order: concurrent requests finish in another order than they began), or with
    `shuffled` anywhere in those days, the worst case for the hourly rollups (every event an hour of its own)."""

    def __init__(self, rng: random.Random, now: datetime, events: int, shuffled: bool):
        self.rng, self.now, self.shuffled = rng, now, shuffled
        self.step = DAYS * 86_400 / max(1, events)  # seconds between two events in order
        self.at = now - timedelta(days=DAYS)

    def next(self) -> datetime:
        if self.shuffled:
            return self.now - timedelta(seconds=self.rng.randrange(DAYS * 86_400))
        self.at += timedelta(seconds=self.step)
        return min(self.now, self.at - timedelta(seconds=self.rng.uniform(0, OUT_OF_ORDER_SECONDS)))


def usage(rng: random.Random, account_id: uuid.UUID, key_id: uuid.UUID, lease_id: uuid.UUID, at: datetime):
    failed = rng.random() < 0.03
    prompt, completion = rng.randint(5, 4000), 0 if failed else rng.randint(1, 1500)
    latency = int(rng.lognormvariate(13.6, 0.9))
    model = MODELS[rng.randrange(len(MODELS))]
    return UsageRecorded(
        trace_id=uuid.uuid4(),
        account_id=account_id,
        key_id=key_id,
        model=model,
        requested_model=model,
        provider="mesh",
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=prompt // 4 if rng.random() < 0.3 else 0,
        prompt_per_1k=PRICE.prompt_per_1k,
        completion_per_1k=PRICE.completion_per_1k,
        cost=0 if failed else PRICE.cost(prompt, completion),
        status="error" if failed else "ok",
        http_status=502 if failed else 200,
        latency_us=latency,
        upstream_us=latency * 9 // 10,
        stream=rng.random() < 0.5,
        error="provider failed with HTTP 500" if failed else None,
        timestamp=at,
        lease_id=lease_id,
    )


async def publish_usage(publisher: UsagePublisher, events: list[UsageRecorded]) -> None:
    for i in range(0, len(events), PUBLISH_CHUNK):
        results = await publisher._publish(events[i : i + PUBLISH_CHUNK])
        failed = [r for r in results if r is not None]
        if failed:
            raise RuntimeError(f"{len(failed)} usage events not stored: {failed[0]}")


async def fill(nats_url: str, nc, spool: Path, events: int, usage_per_lease: int, shuffled: bool) -> int:
    """Fill STREAM through the commands and the usage publisher; the stream's head."""
    app = await asyncio.to_thread(MeshApplication, nats_url, STREAM)
    accounts, keys = AccountCommands(app, password_kdf=CHEAP_KDF), KeyCommands(app)
    topups, budget = TopUpCommands(app), BudgetCommands(app)
    publisher = UsagePublisher(nc, STREAM, spool)
    source = StreamSource(nc, STREAM)
    rng = random.Random(7)
    times = UsageTimes(rng, datetime.now(timezone.utc), events, shuffled)
    started = time.monotonic()
    pairs: list[tuple[uuid.UUID, uuid.UUID]] = []

    def open_account(i: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
        session = accounts.sign_up(f"bench-{i}-{uuid.uuid4().hex[:6]}@example.com", "correct horse battery")
        account = session.account_id
        accounts.grant_credits(account, 10**18, "bench", "operator")
        reference = f"pi_{uuid.uuid4().hex}"
        topups.request(account, "stripe", reference, 10**16)
        topups.confirm("stripe", reference, 10**16, "stripe")
        created = [keys.create(account, f"key {k}", None, None).key.id for k in range(KEYS_PER_ACCOUNT)]
        return [(account, key) for key in created]

    def lease_cycle(pair: tuple[uuid.UUID, uuid.UUID], spent: int):
        account, key = pair
        grant = budget.lease(account, key, 10**15, 1, timedelta(seconds=30))
        budget.extend(account, key, grant.lease_id, timedelta(seconds=30))
        return grant.lease_id

    with ThreadPoolExecutor(COMMAND_THREADS) as threads:
        loop = asyncio.get_running_loop()
        count = max(1, events // EVENTS_PER_ACCOUNT)
        for made in await asyncio.gather(*(loop.run_in_executor(threads, open_account, i) for i in range(count))):
            pairs.extend(made)
        print(f"  {count} accounts, {len(pairs)} keys, top-ups: {time.monotonic() - started:.1f} s", flush=True)
        head = await source.head()
        while head < events:
            chosen = rng.sample(pairs, min(COMMAND_THREADS, len(pairs)))
            leases = await asyncio.gather(*(loop.run_in_executor(threads, lease_cycle, p, 0) for p in chosen))
            batch, spent = [], {}
            for (account, key), lease_id in zip(chosen, leases):
                made = [usage(rng, account, key, lease_id, times.next()) for _ in range(usage_per_lease)]
                spent[lease_id] = sum(e.cost for e in made)
                batch.extend(made)
            await publish_usage(publisher, batch)
            await asyncio.gather(
                *(
                    loop.run_in_executor(threads, budget.settle, account, key, lease_id, spent[lease_id])
                    for (account, key), lease_id in zip(chosen, leases)
                )
            )
            head = await source.head()
    await asyncio.to_thread(app.close)
    elapsed = time.monotonic() - started
    print(f"  filled {head:,} events in {elapsed:.1f} s ({head / elapsed:,.0f} events/s)", flush=True)
    return head


async def copy_with_more_usage(nc, spool: Path, factor: int) -> tuple[int, int]:
    """TENFOLD_STREAM: STREAM's aggregate events as stored, with `factor` times its usage spread between them.
    Returns (aggregate events, head)."""
    await ensure_stream(nc, TENFOLD_STREAM)
    source = StreamSource(nc, STREAM)
    head = await source.head()
    aggregates, usage_count, position = [], 0, 0
    while position < head:
        read = await source.read(position + 1, READ_BATCH)
        for m in read:
            if m.topic.startswith("usage."):
                usage_count += 1
            else:
                aggregates.append(m)
        position = read[-1].position
    publisher = UsagePublisher(nc, TENFOLD_STREAM, spool)
    rng = random.Random(11)
    per_gap = usage_count * factor // max(1, len(aggregates))
    times = UsageTimes(rng, datetime.now(timezone.utc), usage_count * factor, shuffled=False)
    for i, m in enumerate(aggregates):
        headers = {
            HEADER_TOPIC: m.topic,
            HEADER_ORIGINATOR_ID: m.originator_id,
            HEADER_ORIGINATOR_VERSION: str(m.originator_version),
        }
        await nc.publish(aggregate_subject(TENFOLD_STREAM, m.originator_id), m.body, headers=headers)
        if per_gap and (i % 50 == 49 or i == len(aggregates) - 1):
            gap = per_gap * (50 if i % 50 == 49 else (i % 50) + 1)
            account, key = uuid.uuid4(), uuid.uuid4()
            await publish_usage(publisher, [usage(rng, account, key, uuid.uuid4(), times.next()) for _ in range(gap)])
    await nc.flush()
    return len(aggregates), await StreamSource(nc, TENFOLD_STREAM).head()


async def reference_rate(nc, stream: str) -> float:
    """Events/s reading the whole stream by direct get in batches, applying nothing."""
    head, position = await event_log.head(nc, stream), 0
    started = time.monotonic()
    while position < head:
        position = (await event_log.read_batch(nc, stream, position + 1, READ_BATCH))[0][-1].position
    return head / (time.monotonic() - started)


def tree_cpu(root: int) -> float:
    """CPU seconds used so far by a process and its children (an embedded server and, for PostgreSQL, its
    backends, which each start a session of their own)."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == root or int(fields[1]) == root:  # the process, or its child (ppid)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


class Servers:
    """The CPU used by this process, PostgreSQL and nats-server: the figure the machine's other tenants move least
    (wall time on a shared machine waits for their work too)."""

    def __init__(self, postgres: PostgresServer, nats_server: NatsServer):
        assert postgres.process and nats_server.process
        self.roots = (postgres.process.pid, nats_server.process.pid)

    def cpu(self) -> tuple[float, ...]:
        return (time.process_time(), *(tree_cpu(root) for root in self.roots))


async def timed_rebuild(
    model, nc, pool, stream: str, servers: Servers, profile: cProfile.Profile | None = None
) -> tuple[float, tuple[float, ...]]:
    """Wall seconds of a rebuild and the CPU seconds it took of (Mesh, PostgreSQL, nats-server)."""
    started, cpu = time.monotonic(), servers.cpu()
    if profile:
        profile.enable()
    await rebuild(model, nc, pool, stream)
    if profile:
        profile.disable()
    return time.monotonic() - started, tuple(b - a for a, b in zip(cpu, servers.cpu()))


async def compare_catch_ups(nc, pool, servers: Servers, head: int) -> None:
    """The projection worker's catch-up before Mesh serves (`ProjectionWorker.catch_up`: by consumer, REPLAY_BATCH
    events a transaction) from position 0 on emptied read models, beside the same runners as the running worker
    makes them (1,000 by direct get first, then 5,000 by consumer while behind), twice each way, alternated."""
    await ensure_read_models(pool)
    print("\n| projection worker, every read model from 0 | seconds | events/s | CPU s: Mesh, PostgreSQL, NATS |")
    print("|---|---|---|---|")
    for replay in (False, True, False, True):
        async with pool.connection() as conn:
            await conn.execute("update projection_positions set position = 0")
            cur = await conn.execute(
                "select tablename from pg_tables where schemaname = current_schema() and tablename ~ '_g[0-9]+$'"
            )
            for (table,) in await cur.fetchall():
                await conn.execute(f"truncate {table}")
        worker = ProjectionWorker(nc, pool, STREAM, log_bodies=False, retention_days=RETENTION_DAYS)
        started, cpu = time.monotonic(), servers.cpu()
        if replay:
            await worker.catch_up()
        else:
            for runner in worker.runners:
                await runner.catch_up()
        seconds, used = time.monotonic() - started, [b - a for a, b in zip(cpu, servers.cpu())]
        how = "catch-up (consumer, 5,000 a batch)" if replay else "the running worker's runners (1,000, then 5,000)"
        print(f"| {how} | {seconds:.2f} | {head / seconds:,.0f} | {', '.join(f'{u:.1f}' for u in used)} |", flush=True)


async def run(args) -> None:
    with tempfile.TemporaryDirectory(prefix="mesh-bench-replay-") as tmp:
        nats_server = NatsServer(Path(tmp) / "nats").start()
        postgres = PostgresServer(Path(tmp) / "pg").start()
        nc = await nats.connect(nats_server.url)
        pool = AsyncConnectionPool(postgres.url, min_size=1, max_size=4, open=False)
        await pool.open()
        try:
            await ensure_stream(nc, STREAM)
            print(f"filling {args.events:,} events ...", flush=True)
            head = await fill(
                nats_server.url, nc, Path(tmp) / "spool.jsonl", args.events, args.usage_per_lease, args.shuffled_times
            )
            async with pool.connection() as conn:
                await ensure_schema(conn, READ_MODELS)
            servers = Servers(postgres, nats_server)
            settle_garbage_collector()  # as `mesh rebuild` does
            cpu = servers.cpu()
            reference = await reference_rate(nc, STREAM)
            reference_cpu = head / sum(b - a for a, b in zip(cpu, servers.cpu()))
            profile = cProfile.Profile() if args.profile else None
            print(f"\nrebuild of each read model over {head:,} events (reference: direct get, nothing applied)\n")
            print(
                "| read model | seconds | events/s | direct get events/s | ratio "
                "| CPU s: Mesh, PostgreSQL, NATS | events per CPU s | direct get per CPU s |"
            )
            print("|---|---|---|---|---|---|---|---|")
            for model in READ_MODELS:
                seconds, used = await timed_rebuild(
                    model, nc, pool, STREAM, servers, profile if model.name == args.profile_model else None
                )
                rate = head / seconds
                print(
                    f"| {model.name} | {seconds:.2f} | {rate:,.0f} | {reference:,.0f} | {rate / reference:.2f} "
                    f"| {', '.join(f'{u:.1f}' for u in used)} | {head / sum(used):,.0f} | {reference_cpu:,.0f} |",
                    flush=True,
                )
            if profile:
                profile.dump_stats(args.profile)
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
            if args.catch_up:
                await compare_catch_ups(nc, pool, servers, head)
            if args.usage_factor:
                directory = next(m for m in READ_MODELS if m.name == "directory")
                print(f"\ndirectory with the same aggregate events and {args.usage_factor}x the usage ...", flush=True)
                aggregates, tenfold_head = await copy_with_more_usage(
                    nc, Path(tmp) / "spool-x.jsonl", args.usage_factor
                )
                base = (await timed_rebuild(directory, nc, pool, STREAM, servers))[0]
                more = (await timed_rebuild(directory, nc, pool, TENFOLD_STREAM, servers))[0]
                print("\n| stream | events | aggregate events | directory rebuild s | ratio to the first |")
                print("|---|---|---|---|---|")
                print(f"| usage x1 | {head:,} | {aggregates:,} | {base:.2f} | 1.00 |")
                ratio = more / base
                print(f"| usage x{args.usage_factor} | {tenfold_head:,} | {aggregates:,} | {more:.2f} | {ratio:.2f} |")
        finally:
            await pool.close()
            await nc.close()
            postgres.stop()
            nats_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--usage-per-lease", type=int, default=200)
    parser.add_argument("--usage-factor", type=int, default=10, help="0: skip the directory comparison")
    parser.add_argument(
        "--shuffled-times",
        action="store_true",
        help="usage events begin anywhere in the last 30 days instead of in stream order (the rollups' worst case)",
    )
    parser.add_argument("--profile", metavar="FILE", help="run one rebuild under cProfile, stats to FILE")
    parser.add_argument("--profile-model", default="billing")
    parser.add_argument(
        "--catch-up",
        action="store_true",
        help="also time the projection worker's catch-up from position 0 (twice each way, alternated)",
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
