"""How soon a request shows in the read models: from its answer to its balance and log entry.

    python -m bench.freshness [--quiet 30] [--rate 100] [--duration 10] [--one-cpu] [--poll-each]

The same parts as bench/gateway.py (its mock upstream and `mesh up` in a temp dir). Quiet: `--quiet` single
requests, one at a time, each followed by polling the balance every 5 ms until it moved and the log entry until
it answers. Under load: the load generator (bench/gateway.py's, a process of its own, raw HTTP) sends requests at
a steady `--rate` for `--duration` seconds, and beside them this script sends 20 a second with a key of their own,
each timed from its answer until its log entry answers (one client doing both would measure itself: httpx costs
about a millisecond of CPU a call). One poller reads that key's newest log entries every 5 ms, however many
requests wait: a poll loop per waiting request (`--poll-each`, entries read one by one by trace id) multiplies the
bench's own load by the lag it measures, and during a stall its polls take the CPU the read models need.
The reference beside each figure is one poll's own round trip (a read of a read model that already holds the
request): the floor a client polling the API can measure.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench.gateway import Processes, _start_mesh, cell_spec, split_cpus, start_mock_and_loadgen, stop_on_sigterm
from projections.logs import MAX_PAGE

POLL_EVERY = 0.005  # seconds between two reads of the read model
SAMPLES_PER_SECOND = 20  # under load: requests timed from this process, beside the load generator's
LOAD_WORKERS = 64  # connections the load generator paces its requests over
GIVE_UP = 30.0  # seconds a request may take to show before the bench says it never did
MARGIN = 10  # log entries one poll reads beyond the timed requests answered since the oldest still waiting


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def _visible(http, path: str, ready) -> tuple[float, float]:
    """(seconds until `ready(answer)`, the last poll's own round trip)."""
    start = time.perf_counter()
    while True:
        sent = time.perf_counter()
        answer = await http.get(path)
        took = time.perf_counter() - sent
        if ready(answer):
            return time.perf_counter() - start, took
        if time.perf_counter() - start > GIVE_UP:
            raise SystemExit(f"{path} did not show the request within {GIVE_UP} s")
        await asyncio.sleep(POLL_EVERY)


async def _call(http, key: str) -> str:
    answer = await http.post(
        "/v1/chat/completions",
        json={"model": "bench/model", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"},
    )
    answer.raise_for_status()
    return answer.headers["x-mesh-trace-id"]


async def _quiet(http, key: str, count: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {"balance": [], "log entry": [], "poll": []}
    for _ in range(count):
        before = (await http.get("/api/billing/balance")).json()["spend_usd"]
        trace = await _call(http, key)
        moved = lambda a, before=before: a.json()["spend_usd"] != before  # noqa: E731
        shown, poll = await _visible(http, "/api/billing/balance", moved)
        figures["balance"].append(shown)
        figures["poll"].append(poll)
        shown, _ = await _visible(http, f"/api/logs/{trace}", lambda a: a.status_code == 200)
        figures["log entry"].append(shown)
        await asyncio.sleep(0.3)  # quiet again: the worker idles
    return figures


async def _loaded(
    http, timed_key: tuple[str, str], rate: float, duration: float, load: tuple[Connection, dict], poll_each: bool
) -> dict[str, list]:
    """Requests at `rate` a second for `duration` seconds from the load generator (a process of its own, paced), and
    beside them SAMPLES_PER_SECOND requests from here with `timed_key` (its key, its id), each timed from its answer
    until its log entry answers: found by one poller, or with `poll_each` by a poll loop of its own."""
    key, key_id = timed_key
    figures: dict[str, list] = {"log entry": [], "poll": []}
    loadgen, spec = load
    loadgen.send(spec)
    timers: list[asyncio.Task] = []
    waiting: dict[str, tuple[float, int]] = {}  # trace id: when its answer came, how many came before it
    answers = 0

    async def timed() -> None:
        nonlocal answers
        trace = await _call(http, key)
        if not poll_each:
            waiting[trace] = (time.perf_counter(), answers)
            answers += 1
            return
        shown, poll = await _visible(http, f"/api/logs/{trace}", lambda a: a.status_code == 200)
        figures["log entry"].append(shown)
        figures["poll"].append(poll)

    async def poller(sending: asyncio.Task) -> None:
        while not sending.done() or waiting:
            # the newest entries of the key, enough to hold every request still waiting
            newest = answers - min((n for _, n in waiting.values()), default=answers) + MARGIN
            sent = time.perf_counter()
            answer = await http.get("/api/logs", params={"key_id": key_id, "limit": min(newest, MAX_PAGE)})
            now = time.perf_counter()
            answer.raise_for_status()
            figures["poll"].append(now - sent)
            for row in answer.json()["data"]:
                answered = waiting.pop(row["trace_id"], None)
                if answered is not None:
                    figures["log entry"].append(now - answered[0])
            if waiting and now - min(t for t, _ in waiting.values()) > GIVE_UP:
                raise SystemExit(f"a request's log entry did not show within {GIVE_UP} s")
            await asyncio.sleep(POLL_EVERY)

    async def send() -> None:
        start = time.perf_counter()
        n = 0
        while time.perf_counter() - start < duration:
            timers.append(asyncio.create_task(timed()))
            n += 1
            await asyncio.sleep(max(0.0, start + n / SAMPLES_PER_SECOND - time.perf_counter()))
        await asyncio.gather(*timers)

    await asyncio.sleep(spec["warmup"])
    sending = asyncio.create_task(send())
    await asyncio.gather(sending, *([] if poll_each else [poller(sending)]))
    result = await asyncio.to_thread(loadgen.recv)
    if "failed" in result or result["errors"]:
        raise SystemExit(f"the load failed: {result.get('failed') or result['sample']}")
    figures["load"] = [result["rps"]]
    return figures


def _row(name: str, values: list[float], reference: list[float]) -> str:
    p50, p99, ref = _pct(values, 50) * 1000, _pct(values, 99) * 1000, statistics.median(reference) * 1000
    return f"{name:<22}{p50:>9.1f}{p99:>9.1f}{ref:>12.1f}{p50 / ref:>8.1f}x"


async def _measure(base: str, key: str, token: str, args, load: tuple[Connection, dict]) -> None:
    import httpx

    limits = httpx.Limits(max_connections=200)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as http:
        await _call(http, key)  # warm: the key's first lease
        quiet = await _quiet(http, key, args.quiet)
        created = (await http.post("/api/keys", json={"label": "timed"})).raise_for_status().json()
        timed_key = (created["key"], created["id"])
        await _call(http, timed_key[0])
        loaded = await _loaded(http, timed_key, args.rate, args.duration, load, args.poll_each)
    print(f"{'ms':<22}{'p50':>9}{'p99':>9}{'reference':>12}{'ratio':>9}")
    print(_row("quiet: balance", quiet["balance"], quiet["poll"]))
    print(_row("quiet: log entry", quiet["log entry"], quiet["poll"]))
    print(_row(f"{args.rate:g} req/s: log entry", loaded["log entry"], loaded["poll"]))
    polled = (
        "each polled by a loop of its own"
        if args.poll_each
        else f"one poll of their key every {POLL_EVERY * 1000:g} ms"
    )
    print(
        f"load: {loaded['load'][0]:,.0f} req/s from the load generator, beside {SAMPLES_PER_SECOND} timed a second"
        f" ({polled})"
    )
    print("reference: the median round trip of one poll (the read model already holding the request)")


def main() -> int:
    import httpx

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", type=int, default=30, help="single requests on a quiet Mesh (default 30)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second under load (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load (default 10)")
    parser.add_argument("--one-cpu", action="store_true", help="mesh up and all it starts on CPU 0 only")
    parser.add_argument(
        "--poll-each", action="store_true", help="under load, a poll loop per timed request (by trace id)"
    )
    args = parser.parse_args()
    stop_on_sigterm()
    mesh_cpus, other_cpus = split_cpus(parser, args.one_cpu)
    tmp = Path(tempfile.mkdtemp(prefix="mesh-bench-freshness-"))
    procs = Processes()
    try:
        _mock, mock_port, loadgen = start_mock_and_loadgen(procs, 0.0, other_cpus)
        _process, port, key = _start_mesh(procs, tmp, mock_port, None, mesh_cpus)
        base = f"http://127.0.0.1:{port}"
        login = httpx.post(base + "/api/login", json={"email": "bench@example.com", "password": "bench password 123"})
        login.raise_for_status()
        spec = cell_spec("127.0.0.1", port, key, "bench/model", False, LOAD_WORKERS, args.duration, 0.5, rate=args.rate)
        asyncio.run(_measure(base, key, login.json()["management_token"], args, (loadgen, spec)))
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
