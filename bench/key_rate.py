"""What a key's rate limit adds per request, for the two designs of docs/architecture.md ("Key rate limits"):

- reference: the key has no limit (nothing is counted);
- counter: a compare-and-set of the key's counter for this minute in a NATS JetStream key-value bucket, per
  request (gateway/key_rate.py, what Mesh runs);
- slices: a process leases a slice of the minute's allowance (SLICE requests, by the same compare-and-set)
  and admits from it in memory until it is used up (the other design, built here only to be measured).

Each runs the real Gateway ASGI app in process (an upstream that answers at once, usage events dropped, budget
checks off, as bench/admission.py) against an embedded nats-server: first one process, one request at a time
(µs per request), then two processes on two NATS connections sharing one key, IN_FLIGHT requests each at
once (requests/s; their compare-and-sets conflict).

    python -m bench.key_rate [requests]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats

from api.embedded import NatsServer
from bench.admission import DropUsage, InstantAdapter, NoBudgets, chat_scope, one_model_catalog
from domain.credentials import new_api_key
from gateway.admission import KeyInfo
from gateway.app import Gateway
from gateway.key_rate import KeyRates, NatsWindows, RateUse, window_of
from gateway.keys import KeyCache

SLICE = 50  # requests a slice lease takes at once
IN_FLIGHT = 32  # requests at once per process in the two-process run
LIMIT = 1_000_000_000 // 1000  # never reached here: only the counting is measured


class SliceRates(KeyRates):
    """Design (a): a process takes SLICE requests of the minute's allowance at a time from the shared counter
    and admits from its slice in memory (a slice it does not use is lost to the others for that minute)."""

    def __init__(self, store):
        super().__init__(store)
        self.left: dict[tuple, int] = {}
        self.lock = asyncio.Lock()

    async def admit(self, key, tokens):
        window, reset = window_of(self.clock())
        slot = (key.key_id, window)
        if self.left.get(slot, 0) <= 0:
            async with self.lock:
                while self.left.get(slot, 0) <= 0:
                    requests, used, revision = await self.store.read(f"{key.key_id}.{window}")
                    try:
                        await self.store.write(f"{key.key_id}.{window}", requests + SLICE, used, revision)
                    except Exception:  # noqa: BLE001 - another process took a slice meanwhile: again
                        continue
                    self.left[slot] = SLICE
        self.left[slot] -= 1
        return RateUse(key, window, 0, 0, 0, reset)


async def run(requests: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        server = NatsServer(Path(data)).start()
        try:
            await measure(server.url, requests)
        finally:
            server.stop()


async def measure(url: str, requests: int) -> None:
    secret = new_api_key()
    catalog = one_model_catalog()
    body = msgspec.json.encode({"model": "p/m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    scope = chat_scope(secret.plain)

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    connections = [await nats.connect(url), await nats.connect(url)]
    stores = [await NatsWindows.open(nc, "BENCH") for nc in connections]

    def gateway(info: KeyInfo, rates: KeyRates) -> Gateway:
        async def load(_hash):
            return info

        return Gateway(catalog, {"p": InstantAdapter()}, KeyCache(load), NoBudgets(None), DropUsage(), key_rates=rates)

    def key(limited: bool) -> KeyInfo:
        import uuid

        return KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None, rpm_limit=LIMIT if limited else None)

    designs = {
        "reference (no limit)": lambda store: (key(False), KeyRates(store)),
        "counter (Mesh)": lambda store: (key(True), KeyRates(store)),
        f"slices of {SLICE}": lambda store: (key(True), SliceRates(store)),
    }

    async def one_at_a_time(make) -> float:
        gw = gateway(*make(stores[0]))
        for _ in range(200):
            await gw(scope, receive, send)
        started = time.perf_counter()
        for _ in range(requests):
            await gw(scope, receive, send)
        return (time.perf_counter() - started) / requests * 1e6

    async def two_processes(make) -> float:
        info, _ = make(stores[0])
        gws = [gateway(info, type(make(store)[1])(store)) for store in stores]
        per_worker = requests // (2 * IN_FLIGHT)

        async def worker(gw):
            for _ in range(per_worker):
                await gw(scope, receive, send)

        started = time.perf_counter()
        await asyncio.gather(*(worker(gw) for gw in gws for _ in range(IN_FLIGHT)))
        return per_worker * 2 * IN_FLIGHT / (time.perf_counter() - started)

    single = {name: [] for name in designs}
    double = {name: [] for name in designs}
    for _ in range(3):  # interleaved, the best of three
        for name, make in designs.items():
            single[name].append(await one_at_a_time(make))
            double[name].append(await two_processes(make))
    reference = "reference (no limit)"
    best_single = {name: min(v) for name, v in single.items()}
    best_double = {name: max(v) for name, v in double.items()}
    print(f"{'design':<24}{'µs/request, 1 process':>24}{'ratio':>8}{'req/s, 2 processes':>22}{'ratio':>8}")
    for name in designs:
        print(
            f"{name:<24}{best_single[name]:>24.1f}{best_single[name] / best_single[reference]:>8.2f}"
            f"{best_double[name]:>22,.0f}{best_double[name] / best_double[reference]:>8.2f}"
        )
    for nc in connections:
        await nc.close()


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 5000))
