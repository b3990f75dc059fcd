"""The first budget lease after a restart, for an account and key with a long lease history behind them:
loaded from their snapshots (Mesh) beside replayed from every event (the reference, snapshots off).

An embedded nats-server; the history is written through the real commands (a lease and its settlement per
cycle: two events on each aggregate).

    python -m bench.restart [cycles]    (default 3,000: about 25 s to write)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from api.embedded import NatsServer
from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.leasing import BudgetCommands
from commands.keys import KeyCommands

PROGRESS_EVERY = 500  # cycles
ROUNDS = 3


class WithoutSnapshots(MeshApplication):
    snapshotting_intervals = {}


def first_lease(app: MeshApplication, account_id, key_id) -> tuple[float, float]:
    """Wall and CPU seconds of a fresh process's first lease (its aggregates not yet in memory)."""
    wall, cpu = time.perf_counter(), time.process_time()
    BudgetCommands(app).lease(account_id, key_id, 10**9, 1, timedelta(seconds=60))
    return time.perf_counter() - wall, time.process_time() - cpu


def main(cycles: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        nats = NatsServer(Path(data)).start()
        try:
            app = MeshApplication(nats.url)
            session = AccountCommands(app).sign_up(f"bench{os.getpid()}@example.com", "correct horse battery staple")
            account = app.account(session.account_id)
            account.grant_credits(10**18, "bench", "bench")
            app.save(account)
            key_id = KeyCommands(app).create(session.account_id, "bench", None, None).key.id
            budget = BudgetCommands(app)
            for cycle in range(1, cycles + 1):
                lease = budget.lease(session.account_id, key_id, 10**9, 1, timedelta(seconds=60))
                budget.settle(session.account_id, key_id, lease.lease_id, 1)
                if cycle % PROGRESS_EVERY == 0 or cycle == cycles:
                    print(f"\rwriting the history: {cycle:,}/{cycles:,} lease cycles", end="", flush=True)
            print()
            version = app.account(session.account_id).version
            app.close()

            results = {}
            for name, cls in (("replayed (reference)", WithoutSnapshots), ("from snapshot (Mesh)", MeshApplication)):
                runs = []
                for _ in range(ROUNDS):
                    fresh = cls(nats.url)
                    try:
                        runs.append(first_lease(fresh, session.account_id, key_id))
                    finally:
                        fresh.close()
                results[name] = min(runs)
        finally:
            nats.stop()
    print(f"\nfirst lease after a restart, account at version {version:,} (best of {ROUNDS})")
    print(f"{'':24}{'wall ms':>10}{'CPU ms':>10}")
    for name, (wall, cpu) in results.items():
        print(f"{name:24}{wall * 1000:10.1f}{cpu * 1000:10.1f}")
    (ref_wall, _), (mesh_wall, _) = results.values()
    print(f"ratio: {ref_wall / mesh_wall:.0f}x faster from the snapshot")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3_000)
