"""What budget admission adds per request: the gateway's request path with budget checks on vs off.

Both runs push the same priced chat request through the real Gateway ASGI app,
with an in-process provider that answers at once and a usage sink that drops
events, so the only difference is admission: reserving from a budget lease and
settling the reservation. The lease broker runs the real domain decisions in
memory (no NATS round trip), as a lease is taken once per many requests.

    python -m bench.admission [requests]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import msgspec

from domain.account import Account
from domain.apikey import ApiKey
from domain.leases import LeaseGrant, lease_amount
from domain.credentials import new_api_key
from domain.pricing import Price
from gateway.admission import KeyInfo
from gateway.app import Gateway
from gateway.lease_admission import Budgets
from gateway.leases import FREE
from gateway.catalog import Catalog, Model, Provider
from gateway.fields import OPENAI_CHAT_FIELDS
from gateway.keys import KeyCache
from gateway.providers.base import Reply, Usage


class InstantAdapter:
    chat_fields = OPENAI_CHAT_FIELDS
    body = msgspec.json.encode(
        {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    )

    async def chat(self, model, body):
        return Reply(self.body, Usage(10, 5), 1)

    async def aclose(self):
        pass


class DropUsage:
    """Drops every event, and says at once it is stored."""

    def submit(self, event) -> asyncio.Future:
        stored = asyncio.get_running_loop().create_future()
        stored.set_result(None)
        return stored


class MemoryBroker:
    """The lease use case on in-memory aggregates (what BudgetCommands decides, minus the event store)."""

    def __init__(self, key: ApiKey, account: Account):
        self.key, self.account = key, account

    async def acquire(self, account_id, key_id, wanted, minimum):
        now = datetime.now(timezone.utc)
        amount = lease_amount(
            wanted,
            minimum,
            self.key.leasable,
            self.account.leasable,
            self.key.spend_cap,
            self.key.spent_and_reserved,
            self.account.credits,
            self.account.spent_and_reserved,
        )
        lease_id, expires = uuid.uuid4(), now + timedelta(minutes=15)
        self.key.lease(lease_id, amount, expires, now)
        self.account.lease(lease_id, amount, key_id, expires)
        return LeaseGrant(lease_id, amount, expires)

    async def settle(self, account_id, key_id, lease_id, spent):
        self.key.settle_lease(lease_id, spent)
        self.account.settle_lease(lease_id, spent)


class NoBudgets(Budgets):
    async def reserve(self, key, minimum, wanted):
        return FREE


class FundedKey:
    """An account with credits and a capped API key of it, as the in-process benches use them (no servers)."""

    def __init__(self) -> None:
        self.account = Account(email="bench@example.com", password_hash="x", token_hash="t")
        self.account.grant_credits(10**6 * 10**12, "bench", "bench")
        self.secret = new_api_key()
        self.key = ApiKey(
            account_id=self.account.id,
            label="bench",
            key_hash=self.secret.hash,
            prefix=self.secret.prefix,
            spend_cap=10**5 * 10**12,
            default_model=None,
        )
        self.info = KeyInfo(self.key.id, self.account.id, None, "active", self.key.spend_cap)

    async def load(self, _hash: str) -> KeyInfo:
        """The key cache's loader: every key hash is this key."""
        return self.info


def one_model_catalog() -> Catalog:
    """One priced model, `p/m`, of an OpenAI-kind provider that is never called."""
    return Catalog(
        [Provider("p", "openai-compatible", "http://unused")], [Model("p/m", "p", "m", Price.from_usd("0.5", "1.5"))]
    )


def chat_scope(secret_plain: str, path: str = "/v1/chat/completions", *extra_headers: tuple[bytes, bytes]) -> dict:
    """The ASGI scope of a POST to `path` with the API key `secret_plain`."""
    return {
        "type": "http",
        "path": path,
        "method": "POST",
        "headers": [
            (b"authorization", f"Bearer {secret_plain}".encode()),
            (b"content-type", b"application/json"),
            *extra_headers,
        ],
    }


async def run(requests: int) -> None:
    funded = FundedKey()
    account, secret, key, load = funded.account, funded.secret, funded.key, funded.load
    catalog = one_model_catalog()
    body = msgspec.json.encode({"model": "p/m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]})
    scope = chat_scope(secret.plain)

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        pass

    async def measure(budgets: Budgets) -> float:
        gateway = Gateway(catalog, {"p": InstantAdapter()}, KeyCache(load), budgets, DropUsage())
        for _ in range(1000):  # warm up: caches, the first lease
            await gateway(scope, receive, send)
        started = time.perf_counter()
        for _ in range(requests):
            await gateway(scope, receive, send)
        return (time.perf_counter() - started) / requests * 1e6

    rows = []
    for _ in range(3):  # interleave to even out noise
        rows.append(
            (await measure(NoBudgets(MemoryBroker(key, account))), await measure(Budgets(MemoryBroker(key, account))))
        )
    off = min(r[0] for r in rows)
    on = min(r[1] for r in rows)
    print(f"{'path':<34}{'µs/request':>12}")
    print(f"{'gateway, budget checks off':<34}{off:>12.1f}")
    print(f"{'gateway, budget checks on':<34}{on:>12.1f}")
    print(f"{'added by admission':<34}{on - off:>12.1f}   (target <= 50 µs; ratio on/off {on / off:.2f})")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
