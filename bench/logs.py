"""Request logs at scale: query latency for every filter combination, entry lookup, export and apply rate.

Fills the logs read model with `--rows` usage events (default 10 million) through the projection's own
insert (projections.logs.insert, the SQL the projection runs, in bulk chunks), spread over many accounts,
models, keys and 60 days, with a realistic error share, on an embedded PostgreSQL of its own (or the database
in MESH_DATABASE_URL). Then, against the busiest account (a fifth of all rows):

- p50/p95 of the first page (limit 50) and of a page 1,000 pages deep (by its cursor) for every combination
  of the filters the API takes: date window, model, provider, key_id, status (success | error), min_latency_ms;
- p50/p95 of one entry by trace id (GET /api/logs/{trace_id});
- export rows/s (the route's JSON-lines stream over the busiest account);
- the projection's apply rate: decoding the stored events and applying them in the runner's batches of
  1,000 (one transaction each), on a table already holding the rows above.

Each line prints the goal beside the measure and their ratio (goal p95 <= 50 ms; apply >= 20,000 events/s).

    python -m bench.logs [--rows 10000000] [--samples 20] [--apply-events 100000] [--apply-rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import psycopg

from api.cli import settle_garbage_collector
from api.postgres_server import PostgresServer
from domain.events import decode_event
from domain.usage import UsageRecorded
from gateway.trace_ids import uuid7
from projections import logs
from projections.directory_projection import Directory
from projections.logs import LogFilter, Logs
from projections.readmodel import Envelope, ensure_schema, physical_tables

GOAL_P95_MS = 50.0
GOAL_APPLY = 20_000  # events/s: the gateway serves ~8,000 req/s here; the projection must never trail it
PAGE = 50
DEEP_PAGES = 1000
ACCOUNTS = 500
KEYS_PER_ACCOUNT = 5
PROVIDERS = {
    "openai": ["gpt-4o", "gpt-4o-mini", "gpt-5", "o3"],
    "anthropic": ["claude-sonnet", "claude-haiku"],
    "gemini": ["gemini-pro", "gemini-flash"],
    "local": ["llama-70b", "qwen-32b", "mistral-7b", "phi-4"],
}
MODELS = [(p, f"{p}/{m}") for p, ms in PROVIDERS.items() for m in ms]
ERROR_SHARE = 0.03
DAYS = 60
CHUNK = 5000
SLOW_MS = 2000  # the min_latency_ms the bench asks for (about a sixth of requests are slower)


class World:
    """Accounts and keys, the busiest account first; deterministic for a seed."""

    def __init__(self, seed: int = 7):
        self.rng = random.Random(seed)
        self.accounts = [uuid.UUID(int=self.rng.getrandbits(128)) for _ in range(ACCOUNTS)]
        self.keys = {
            a: [uuid.UUID(int=self.rng.getrandbits(128)) for _ in range(KEYS_PER_ACCOUNT)] for a in self.accounts
        }
        self.now = datetime.now(timezone.utc)

    @property
    def busiest(self) -> uuid.UUID:
        return self.accounts[0]

    def event(self, rng: random.Random, live: bool = False) -> UsageRecorded:
        """A request at a random time of the last DAYS days, or (`live`) of the last minute, as the projection
        sees them arrive."""
        # a fifth of all traffic is one account; the rest spread evenly
        account = self.busiest if rng.random() < 0.2 else self.accounts[rng.randrange(1, ACCOUNTS)]
        provider, model = MODELS[rng.randrange(len(MODELS))]
        failed = rng.random() < ERROR_SHARE
        prompt, completion = rng.randint(5, 4000), 0 if failed else rng.randint(1, 1500)
        latency = int(rng.lognormvariate(13.6, 0.9))  # microseconds; median ~0.8 s
        timestamp = self.now - timedelta(microseconds=rng.randrange((60 if live else DAYS * 86_400) * 10**6))
        return UsageRecorded(
            trace_id=uuid7(int(timestamp.timestamp() * 1000), rng.getrandbits(74)),  # as the gateway makes them
            account_id=account,
            key_id=self.keys[account][rng.randrange(KEYS_PER_ACCOUNT)],
            model=model,
            requested_model=model,
            provider=provider,
            prompt_tokens=prompt,
            completion_tokens=completion,
            prompt_per_1k=500_000_000_000,
            completion_per_1k=1_500_000_000_000,
            cost=0 if failed else prompt * 500_000_000 + completion * 1_500_000_000,
            status="error" if failed else "ok",
            http_status=502 if failed else 200,
            timestamp=timestamp,
            latency_us=latency,
            upstream_us=latency * 9 // 10,
            first_token_us=None,
            stream=rng.random() < 0.4,
            error="provider failed with HTTP 500" if failed else None,
            cached_prompt_tokens=prompt // 4,
        )


async def fill(conn: psycopg.AsyncConnection, world: World, table: str, rows: int, seed: int) -> float:
    """`rows` events through the projection's insert; returns events/s of this bulk path (setup only)."""
    rng = random.Random(seed)  # another seed for every fill of the same table: new trace ids
    started, done = time.perf_counter(), 0
    while done < rows:
        n = min(CHUNK, rows - done)
        async with conn.transaction():
            async with conn.cursor() as cur:
                await logs.insert(cur, table, [world.event(rng) for _ in range(n)])
        done += n
        rate = done / (time.perf_counter() - started)
        print(f"\r  filling: {done:,}/{rows:,} rows ({rate:,.0f}/s)", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    await conn.execute(f"analyze {table}")
    return done / (time.perf_counter() - started)


async def add_keys(conn: psycopg.AsyncConnection, world: World, table: str) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            f"insert into {table} (key_id, account_id, label, prefix, created_at, updated_at)"
            " values (%s, %s, %s, 'mk-bench', now(), now())",
            [(k, a, f"key {i}") for a, ks in world.keys.items() for i, k in enumerate(ks)],
        )
    await conn.commit()


def combinations(world: World, rng: random.Random):
    """Every combination of the API's filters, as (name, a function giving a LogFilter with fresh values)."""
    dims = ["date", "model", "provider", "key_id", "status", "min_latency_ms"]
    choices = {d: (None, "success", "error") if d == "status" else (False, True) for d in dims}
    for mask in itertools.product(*choices.values()):
        chosen = dict(zip(dims, mask))
        name = "+".join(d if d != "status" else f"status={chosen['status']}" for d in dims if chosen[d]) or "(none)"

        def make(chosen=chosen) -> LogFilter:
            provider, model = MODELS[rng.randrange(len(MODELS))]
            if chosen["provider"] and chosen["model"]:
                model = f"{provider}/{PROVIDERS[provider][rng.randrange(len(PROVIDERS[provider]))]}"
            end = world.now - timedelta(days=rng.randint(0, 20))
            return LogFilter(
                account_id=world.busiest,
                start=end - timedelta(days=14) if chosen["date"] else None,
                end=end if chosen["date"] else None,
                model=model if chosen["model"] else None,
                provider=provider if chosen["provider"] else None,
                key_id=world.keys[world.busiest][rng.randrange(KEYS_PER_ACCOUNT)] if chosen["key_id"] else None,
                status=chosen["status"],
                min_latency_ms=SLOW_MS if chosen["min_latency_ms"] else None,
            )

        yield name, make


async def timed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    result = await coro
    return (time.perf_counter() - started) * 1000, result


async def deep_cursor(conn, f: LogFilter) -> tuple[datetime, uuid.UUID] | None:
    """The cursor a client holds after DEEP_PAGES pages (set-up: found with an offset, not timed)."""
    where, params = logs._where(f, None)
    cur = await conn.execute(
        f"select l.time, l.trace_id from logs l{where} order by l.time desc, l.trace_id desc offset %s limit 1",
        [*params, DEEP_PAGES * PAGE - 1],
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def line(name: str, first: list[float], deep: list[float], deep_note: str = "") -> str:
    worst = max(p(first, 95), p(deep, 95) if deep else 0)
    deep_cols = f"{p(deep, 50):7.2f} {p(deep, 95):7.2f}" if deep else f"{deep_note:>15}"
    return (
        f"{name:<52} {p(first, 50):7.2f} {p(first, 95):7.2f}   {deep_cols}   "
        f"{GOAL_P95_MS:5.0f}  {worst / GOAL_P95_MS:5.2f}"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def apply_rate(conn, world: World, t: dict[str, str], events: int) -> tuple[float, float]:
    """The projection's work per batch on live traffic: decode the stored bodies, apply, one transaction per 1,000.
    Returns (events per second of wall time, events per CPU second of this process and its PostgreSQL
    backend together): on a busy machine the second says what one core would do."""
    rng = random.Random(time.time_ns())  # new trace ids on every run
    model = Logs()
    bodies = [msgspec.json.encode(world.event(rng, live=True)) for _ in range(events)]
    now = datetime.now(timezone.utc)
    backend = (await (await conn.execute("select pg_backend_pid()")).fetchone())[0]
    cpu = time.process_time() + cpu_seconds(backend)
    started = time.perf_counter()
    for i in range(0, events, 1000):
        batch = [
            Envelope(i + j, now, "usage.recorded", decode_event("usage.recorded", body, None, 1))
            for j, body in enumerate(bodies[i : i + 1000])
        ]
        async with conn.transaction():
            async with conn.cursor() as cur:
                await model.apply(cur, t, batch)
    wall = time.perf_counter() - started
    return events / wall, events / (time.process_time() + cpu_seconds(backend) - cpu)


async def run(args) -> None:
    world = World()
    model, directory = Logs(), Directory()
    async with await psycopg.AsyncConnection.connect(args.database_url, autocommit=True) as conn:
        await ensure_schema(conn, [directory, model])
        t = physical_tables(model, 1)
        cur = await conn.execute(f"select count(*) from {t['logs']}")
        present = (await cur.fetchone())[0]
        if present < args.rows:
            if present == 0:
                await add_keys(conn, world, physical_tables(directory, 1)["api_keys"])
            fill_rate = await fill(conn, world, t["logs"], args.rows - present, seed=present)
            print(f"filled {args.rows - present:,} rows through projections.logs.insert at {fill_rate:,.0f} rows/s")
            # what autovacuum does after a bulk load, done now: the measurements below then do not share the
            # machine with it
            started = time.perf_counter()
            await conn.execute(f"vacuum (analyze) {t['logs']}")
            print(f"vacuumed and analyzed in {time.perf_counter() - started:.0f} s")
        cur = await conn.execute(
            f"select count(*), count(*) filter (where account_id = %s) from {t['logs']}", (world.busiest,)
        )
        total, busiest = await cur.fetchone()
        print(
            f"logs: {total:,} rows; busiest account {busiest:,} rows; {len(MODELS)} models, "
            f"{ACCOUNTS} accounts x {KEYS_PER_ACCOUNT} keys, {ERROR_SHARE:.0%} errors, {DAYS} days\n"
        )

        rng = random.Random(3)
        print(f"{'filters (busiest account)':<52} {'first page ms':>15}   {'page 1000 ms':>15}   {'goal':>5}  ratio")
        print(f"{'':<52} {'p50':>7} {'p95':>7}   {'p50':>7} {'p95':>7}   {'p95':>5}  (worst p95 / goal)")
        worst = 0.0
        for name, make in combinations(world, rng):
            first, deep, shallow = [], [], 0
            for _ in range(args.samples):
                ms, _ = await timed(logs.page(conn, make(), PAGE + 1))
                first.append(ms)
            for _ in range(max(2, args.samples // 2)):
                f = make()
                cursor = await deep_cursor(conn, f)
                if cursor is None:
                    shallow += 1
                    continue
                ms, _ = await timed(logs.page(conn, f, PAGE + 1, cursor))
                deep.append(ms)
            worst = max(worst, p(first, 95), p(deep, 95) if deep else 0)
            print(line(name, first, deep, "fewer rows"), flush=True)

        cur = await conn.execute(
            f"select trace_id from {t['logs']} where account_id = %s order by random() limit %s",
            (world.busiest, args.samples * 10),
        )
        traces = [r[0] for r in await cur.fetchall()]
        lookups = [(await timed(logs.entry(conn, trace, world.busiest)))[0] for trace in traces]
        worst = max(worst, p(lookups, 95))
        print(
            f"{'GET /api/logs/{trace_id}':<52} {p(lookups, 50):7.2f} {p(lookups, 95):7.2f}   {'':>15}   "
            f"{GOAL_P95_MS:5.0f}  {p(lookups, 95) / GOAL_P95_MS:5.2f}"
        )
        print(f"\nworst p95 of any query: {worst:.2f} ms (goal {GOAL_P95_MS:.0f} ms, ratio {worst / GOAL_P95_MS:.2f})")

    from api.exports import ExportGate
    from api.log_entries import EXPORT_IDLE_SECONDS
    from api.services.logs import LogService
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(args.database_url, min_size=1, max_size=2) as pool:
        service = LogService(pool, ExportGate(), args.database_url, EXPORT_IDLE_SECONDS)
        started, size = time.perf_counter(), 0
        export = await service.export(world.busiest, LogFilter(account_id=world.busiest), "jsonl")
        async for chunk in export.lines:
            size += chunk.count(b"\n")
        rate = size / (time.perf_counter() - started)
        print(f"export (jsonl, busiest account): {size:,} rows at {rate:,.0f} rows/s")

    settle_garbage_collector()  # as the projection worker does once started
    async with await psycopg.AsyncConnection.connect(args.database_url, autocommit=True) as conn:
        rounds = [
            await apply_rate(conn, world, physical_tables(model, 1), args.apply_events)
            for _ in range(args.apply_rounds)
        ]
    walls, per_cpus = sorted(r[0] for r in rounds), sorted(r[1] for r in rounds)
    wall, per_cpu = statistics.median(walls), statistics.median(per_cpus)
    print(
        f"logs projection apply, median of {args.apply_rounds} rounds of {args.apply_events:,} events in batches"
        f" of 1,000: {wall:,.0f} events/s wall, {per_cpu:,.0f} events per CPU second (worker + its PostgreSQL"
        f" backend; goal {GOAL_APPLY:,} on one core; ratio {per_cpu / GOAL_APPLY:.2f}); per CPU second the rounds"
        f" ranged {per_cpus[0]:,.0f}-{per_cpus[-1]:,.0f}; load average {os.getloadavg()[0]:.1f} on"
        f" {os.cpu_count()} CPUs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=20, help="timed queries per filter combination")
    parser.add_argument("--apply-events", type=int, default=100_000, help="events per round of the apply measure")
    parser.add_argument("--apply-rounds", type=int, default=5, help="rounds of the apply measure (the median is told)")
    parser.add_argument("--keep", metavar="DIR", help="keep the embedded PostgreSQL in DIR (reuse its rows)")
    args = parser.parse_args()
    args.database_url = os.environ.get("MESH_DATABASE_URL")
    server = None
    if not args.database_url:
        data = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mesh-bench-logs-"))
        server = PostgresServer(data / "pg").start()
        args.database_url = server.url
    try:
        asyncio.run(run(args))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
