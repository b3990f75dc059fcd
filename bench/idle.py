"""What a Mesh nobody calls costs the machine: the CPU of `mesh up` and each process it starts, over a quiet minute.

The reference is Mesh's own embedded servers beside it: what nats-server and PostgreSQL take idle, with Mesh's
connections to them open. Mesh's processes (the gateway and API, the projection worker) are measured against that.

    python -m bench.idle [--settle 10] [--duration 60]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.gateway import Processes, _cpu_tree, _free_port, _start_mesh, stop_on_sigterm


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
    args = parser.parse_args()
    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="mesh-bench-idle-"))
    procs = Processes()
    try:
        process, _port, _key = _start_mesh(procs, tmp, _free_port(), None)  # (no upstream is ever called)
        time.sleep(args.settle)
        before, started = _cpu_by_role(process.pid), time.monotonic()
        time.sleep(args.duration)
        after, seconds = _cpu_by_role(process.pid), time.monotonic() - started
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
