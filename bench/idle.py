"""What a Mesh nobody calls costs the machine: the CPU of `mesh up` and each process it starts, over a quiet minute.

The reference is Mesh's own embedded servers beside it: what nats-server and PostgreSQL take idle, with Mesh's
connections to them open. Mesh's processes (the gateway and API, the projection worker) are measured against that.

With `--rate R`, the quiet window is then followed by one as long with R chat completions a second (to
bench/gateway.py's mock upstream, one at a time from this process): what each part of Mesh spends per request at
a trickle, beyond its idle CPU (the reference, same run). Each request is a usage event that the read models apply
as it arrives, alone.

    python -m bench.idle [--settle 10] [--duration 60] [--rate 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.gateway import Processes, _cpu_tree, _free_port, _start_mesh, start_mock_and_loadgen, stop_on_sigterm


def _role(cmdline: list[str]) -> str:
    """Which part of Mesh a process is."""
    text = " ".join(cmdline)
    if "nats-server" in text:
        return "nats-server"
    if "postgres" in text:
        return "postgresql"
    if "projections" in text:
        return "projection worker"
    return "gateway and API"


def _cpu_by_role(root: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of `root` and every process under it, summed by role."""
    import psutil

    totals: dict[str, float] = {}
    for pid, seconds in _cpu_tree(root).items():
        try:
            role = _role(psutil.Process(pid).cmdline())
        except psutil.Error:
            continue
        totals[role] = totals.get(role, 0.0) + seconds
    return totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after start-up before measuring")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds measured (default 60)")
    parser.add_argument("--rate", type=float, default=0.0, help="then as long at this many requests a second")
    args = parser.parse_args()
    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="mesh-bench-idle-"))
    procs = Processes()
    try:
        mock_port = start_mock_and_loadgen(procs, 0.0, None)[1] if args.rate else _free_port()  # (else none called)
        process, port, key = _start_mesh(procs, tmp, mock_port, None)
        time.sleep(args.settle)
        before, started = _cpu_by_role(process.pid), time.monotonic()
        time.sleep(args.duration)
        after, seconds = _cpu_by_role(process.pid), time.monotonic() - started
        if args.rate:
            requests, busy_seconds = _trickle(port, key, args.rate, args.duration)
            busy = _cpu_by_role(process.pid)
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    used = {role: (after.get(role, 0.0) - before.get(role, 0.0)) / seconds * 1000 for role in after}
    mesh = used.get("gateway and API", 0.0) + used.get("projection worker", 0.0)
    servers = used.get("nats-server", 0.0) + used.get("postgresql", 0.0)
    print(f"idle for {seconds:.0f} s; CPU ms per second (1000 = one CPU)")
    for role in ("gateway and API", "projection worker", "nats-server", "postgresql"):
        print(f"  {role:<20} {used.get(role, 0.0):7.2f}")
    print(f"Mesh's processes {mesh:.2f}, its servers (reference) {servers:.2f}, ratio {mesh / max(servers, 1e-9):.2f}x")
    if args.rate:
        print(f"\n{requests} requests in {busy_seconds:.0f} s ({requests / busy_seconds:.1f} a second), one at a time")
        print(f"  {'':<20} {'idle ms/s':>10} {'busy ms/s':>10} {'ms/request':>11}")
        per_request = 0.0
        for role in ("gateway and API", "projection worker", "nats-server", "postgresql"):
            rate = (busy.get(role, 0.0) - after.get(role, 0.0)) / busy_seconds * 1000
            cost = (rate - used.get(role, 0.0)) * busy_seconds / requests
            per_request += cost
            print(f"  {role:<20} {used.get(role, 0.0):10.2f} {rate:10.2f} {cost:11.2f}")
        print(f"  {'all':<20} {'':>10} {'':>10} {per_request:11.2f}")
    return 0


def _trickle(port: int, key: str, rate: float, duration: float) -> tuple[int, float]:
    """`rate` chat completions a second for `duration` seconds; (requests answered, seconds taken)."""
    import httpx

    body = {"model": "bench/model", "messages": [{"role": "user", "content": "hi"}]}
    answered, started = 0, time.monotonic()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {key}"}) as client:
        while time.monotonic() - started < duration:
            client.post("/v1/chat/completions", json=body).raise_for_status()
            answered += 1
            time.sleep(max(0.0, started + answered / rate - time.monotonic()))
    return answered, time.monotonic() - started


if __name__ == "__main__":
    raise SystemExit(main())
