"""Does a flood of logins delay the gateway's lease commands? They run in the default thread pool
(`asyncio.to_thread`), the KDF in a pool of its own (api/logins.py).

While `logins` password checks (scrypt at Mesh's parameters, against the dummy hash, as for an unknown email)
are in flight, a stand-in lease command (a short job in the default pool, as CommandLeases runs
BudgetCommands) is timed every 20 ms. Reference: the same flood with the KDF in the default pool, as before.

    python -m bench.logins [logins]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from api.logins import LoginGuard
from domain.credentials import DUMMY_PASSWORD_HASH, verify_password

PROBE_EVERY = 0.02


def lease_stand_in() -> None:
    time.sleep(0.001)  # a lease command is mostly waiting for NATS


async def probe(stop: asyncio.Event) -> list[float]:
    waits = []
    while not stop.is_set():
        started = time.perf_counter()
        await asyncio.to_thread(lease_stand_in)
        waits.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(PROBE_EVERY)
    return waits


async def flood(logins: int, own_pool: bool) -> tuple[list[float], float]:
    guard = LoginGuard()
    stop = asyncio.Event()
    probing = asyncio.create_task(probe(stop))
    started = time.perf_counter()
    if own_pool:
        checks = [guard.run(verify_password, "a guess", DUMMY_PASSWORD_HASH) for _ in range(logins)]
    else:
        checks = [asyncio.to_thread(verify_password, "a guess", DUMMY_PASSWORD_HASH) for _ in range(logins)]
    await asyncio.gather(*checks)
    elapsed = time.perf_counter() - started
    stop.set()
    waits = await probing
    guard.close()
    return waits, elapsed


def row(name: str, waits: list[float], elapsed: float) -> str:
    p99 = statistics.quantiles(waits, n=100)[98] if len(waits) > 1 else waits[0]
    return f"{name:<34} {statistics.median(waits):>9.1f} {p99:>9.1f} {max(waits):>9.1f} {elapsed:>9.1f}"


async def main(logins: int) -> None:
    print(f"{logins} concurrent logins; a lease-command stand-in timed every {PROBE_EVERY * 1000:.0f} ms")
    print(f"{'':<34} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} {'flood s':>9}")
    reference, ref_elapsed = await flood(logins, own_pool=False)
    print(row("KDF in the default pool (before)", reference, ref_elapsed))
    mesh, elapsed = await flood(logins, own_pool=True)
    print(row("KDF in its own pool (Mesh)", mesh, elapsed))
    p99 = statistics.quantiles(mesh, n=100)[98]
    reference_p99 = statistics.quantiles(reference, n=100)[98]
    print(f"ratio of p99 (Mesh / before): {p99 / reference_p99:.3f}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 24))
