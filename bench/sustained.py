"""Mesh under minutes of full load: does it hold its rate and latency, and what do its helpers grow to?

    python -m bench.sustained [--duration 150] [--window 10] [--concurrency 64] [--one-cpu]

The same parts as bench/gateway.py (its mock upstream, load generator and `mesh up` in a temp dir). First the
reference: the mock called directly for one window. Then Mesh for --duration seconds, reported per window:
requests/s (and its ratio to the direct reference), latency p50 / p99 / max, the CPU share of the gateway, of
nats-server and of the background helpers (projection worker and PostgreSQL), and nats-server's resident
memory. A 3-second cell hides what grows with time: state kept per event for a while, a PostgreSQL checkpoint
(every 5 minutes), read models that stop keeping up. At the end: how many times the projection worker logged a
failed batch (it retries; under load it should not have to), and the warnings and errors mesh logged.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import httpx

from bench.gateway import Processes, _start_mesh, cell_spec, split_cpus, start_mock_and_loadgen, stop_on_sigterm

GROUPS = ("gateway", "nats", "background")
HEALTH_TIMEOUT = 10.0  # seconds for /health at a window's end
LOGGED_SHOWN = 20  # warning and error lines of the mesh log printed at the end


def _groups(gateway_pid: int) -> dict[str, list]:
    """The processes of `mesh up`, by role: itself, nats-server, and its idle-priority helpers."""
    import psutil

    root = psutil.Process(gateway_pid)
    groups: dict[str, list] = {"gateway": [root], "nats": [], "background": []}
    for child in root.children(recursive=True):
        try:
            name = child.name()
        except psutil.Error:
            continue
        groups["nats" if name.startswith("nats-server") else "background"].append(child)
    return groups


def _sample(gateway_pid: int) -> tuple[dict[str, float], float]:
    """CPU seconds by role, and nats-server's resident MB. PostgreSQL starts and ends backends: each sample
    looks the processes up again, so a role's CPU is what its processes alive at both samples spent."""
    import psutil

    seconds: dict[str, float] = {}
    rss = 0.0
    for role, processes in _groups(gateway_pid).items():
        for p in processes:
            try:
                t = p.cpu_times()
                seconds[f"{role}:{p.pid}"] = t.user + t.system
                if role == "nats":
                    rss += p.memory_info().rss / 2**20
            except psutil.Error:
                pass
    return seconds, rss


def _read_model_lag(port: int, operator_token: str) -> int:
    """The events the furthest-behind read model has still to apply, as /health's details say at the window's end
    (-1: it did not say). Divided by the window's request rate (a usage event per request), about how many seconds
    the read models trail the gateway."""
    try:
        health = httpx.get(
            f"http://127.0.0.1:{port}/health",
            headers={"authorization": f"Bearer {operator_token}"},
            timeout=HEALTH_TIMEOUT,
        ).json()
    except httpx.HTTPError:
        return -1
    return max((p["lag"] for p in health.get("projections") or []), default=-1)


def _shares(before: dict[str, float], after: dict[str, float], wall: float) -> dict[str, float]:
    shares = dict.fromkeys(GROUPS, 0.0)
    for name, value in after.items():
        if name in before:
            shares[name.split(":")[0]] += (value - before[name]) / wall * 100
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=150.0, help="seconds of load on Mesh (default 150)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds per reported window (default 10)")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight (default 64)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="the upstream's fixed latency (default 0)")
    parser.add_argument(
        "--one-cpu", action="store_true", help="mesh up (and NATS, PostgreSQL, worker) on CPU 0 only, as taskset -c 0"
    )
    args = parser.parse_args()

    server_cpus, others = split_cpus(parser, args.one_cpu)

    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="mesh-sustained-"))
    procs = Processes()
    try:
        _, mock_port, loadgen_end = start_mock_and_loadgen(procs, args.latency_ms, others)
        mesh, mesh_port, key = _start_mesh(procs, tmp, mock_port, None, server_cpus)
        model = "model-slow" if args.latency_ms else "model"
        operator_token = (tmp / "mesh-data" / "operator_token").read_text().strip()

        def spec(port: int, api_key: str, prefix: str, duration: float, window: float | None) -> dict:
            return cell_spec(
                "127.0.0.1", port, api_key, prefix + model, False, args.concurrency, duration, 0.5, window=window
            )

        loadgen_end.send(spec(mock_port, "sk-unused", "", args.window, None))
        direct = loadgen_end.recv()
        if "failed" in direct:
            raise SystemExit(f"load generator failed on the mock: {direct['failed']}")
        print(
            f"\n{'mesh up on CPU 0 only; ' if args.one_cpu else ''}{args.concurrency} in flight, upstream "
            f"{args.latency_ms:g} ms, plain requests. Direct to the mock for {args.window:g} s (the reference): "
            f"{direct['rps']:.0f} req/s, p50 {direct['p50']:.2f} ms, p99 {direct['p99']:.2f} ms\n",
            flush=True,
        )
        print(
            f"{'from s':>7} {'req/s':>8} {'x direct':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8} "
            f"{'gw CPU%':>8} {'nats CPU%':>10} {'bg CPU%':>8} {'nats MB':>8} {'lag ev':>8} {'lag s':>6}",
            flush=True,
        )
        loadgen_end.send(spec(mesh_port, key, "bench/", args.duration, args.window))
        time.sleep(0.5)  # the warm-up
        before, _ = _sample(mesh.pid)
        began = last = time.monotonic()
        samples = []  # (CPU shares, nats MB, read models' lag in events) per window, as they come
        windows = math.ceil(args.duration / args.window)
        while len(samples) < windows:
            done = loadgen_end.poll(max(0.0, began + args.window * (len(samples) + 1) - time.monotonic()))
            after, rss = _sample(mesh.pid)
            now = time.monotonic()
            samples.append((_shares(before, after, now - last), rss, _read_model_lag(mesh_port, operator_token)))
            before, last = after, now
            if done:  # the last window ended a little early
                break
        result = loadgen_end.recv()
        if "failed" in result:
            raise SystemExit(f"load generator failed on Mesh: {result['failed']}")
        for index, window in enumerate(result["windows"]):
            if index * args.window >= args.duration:  # requests still in flight at the end
                break
            rps = window["n"] / min(args.window, args.duration - index * args.window)  # the last may be shorter
            shares, rss, lag = samples[index] if index < len(samples) else (dict.fromkeys(GROUPS, float("nan")), 0.0, 0)
            print(
                f"{index * args.window:7.0f} {rps:8.0f} {rps / direct['rps']:9.3f} {window['p50']:7.2f} "
                f"{window['p99']:7.2f} {window['max']:8.1f} {shares['gateway']:8.1f} {shares['nats']:10.1f} "
                f"{shares['background']:8.1f} {rss:8.0f} {lag:8d} {lag / rps if rps else 0.0:6.2f}",
                flush=True,
            )
        print(
            f"\nwhole run: {result['rps']:.0f} req/s ({result['rps'] / direct['rps']:.3f}x direct), p50 "
            f"{result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, errors {result['errors']}",
            flush=True,
        )
        logged = (tmp / "mesh.log").read_text(errors="replace")
        print(f"projection batches that failed and were retried: {logged.count('failed a batch')}", flush=True)
        warnings = [line for line in logged.splitlines() if "WARNING" in line or "ERROR" in line]
        print(f"warnings and errors mesh logged: {len(warnings)}", *warnings[:LOGGED_SHOWN], sep="\n  ", flush=True)
    except KeyboardInterrupt:
        return 130
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
