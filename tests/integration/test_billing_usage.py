"""What the Billing page's usage reads, on a real nats-server and PostgreSQL: latency percentiles per hour and day
from the logs, a spend history by key that tells a few keys apart and sums the rest, and the credit history with
what each movement was."""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from datetime import timedelta, timezone
from decimal import Decimal

from commands.accounts import AccountCommands
from commands.autorefill import AutoRefillCommands
from commands.topups import TopUpCommands
from projections import billing, logs
from projections.spend_history import OTHER_KEYS, spend_history
from tests.conftest import TEST_KDF
from tests.integration.test_logs import BILLING, LOGS, NOW, accounts, catch_up, env, usage  # noqa: F401

USD = 10**12


def percentile_disc(values: list[int], fraction: str) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(Decimal(fraction) * len(ordered))) - 1]


async def test_latency_per_bucket_is_percentile_disc_of_the_accounts_requests_and_other_keys_are_summed(env):
    nc, pool, app, publisher = env
    mine, theirs = await accounts(app, 2)
    rng = random.Random(11)
    keys = [uuid.uuid4() for _ in range(12)]
    events = [usage(mine, NOW - timedelta(seconds=rng.randint(0, 3 * 86_400)), rng, keys) for _ in range(300)]
    others = [usage(theirs, NOW - timedelta(minutes=5), rng, [uuid.uuid4()], latency_us=1) for _ in range(20)]
    for event in events + others:
        await publisher.publish(event)
    await catch_up(nc, pool, publisher.stream, BILLING, LOGS)
    start, end = NOW - timedelta(days=4), NOW + timedelta(seconds=1)

    async with pool.connection() as conn:
        for unit, length in (("day", len("2026-11-30")), ("hour", len("2026-11-30T13"))):
            buckets: dict[str, list[int]] = {}
            for e in events:
                buckets.setdefault(e.timestamp.astimezone(timezone.utc).isoformat()[:length], []).append(e.latency_us)
            found = await logs.latency_by_bucket(conn, mine, unit, start, end)
            assert [(b.bucket[:length], b.requests, b.p50_us, b.p95_us) for b in found] == [
                (bucket, len(values), percentile_disc(values, "0.5"), percentile_disc(values, "0.95"))
                for bucket, values in sorted(buckets.items())
            ]
            assert all(b.bucket.endswith(":00:00Z") for b in found)
        inside = await logs.latency_by_bucket(conn, mine, "day", NOW - timedelta(hours=1), end)
        assert sum(b.requests for b in inside) == sum(e.timestamp >= NOW - timedelta(hours=1) for e in events)

        kept = keys[:3]
        rows = await spend_history(conn, mine, ["day", "key"], start, end, keys=kept)
        expected: dict[tuple[str, str], list[int]] = {}
        for e in events:
            group = (e.timestamp.astimezone(timezone.utc).date().isoformat(), str(e.key_id))
            if e.key_id not in kept:
                group = (group[0], OTHER_KEYS)
            sums = expected.setdefault(group, [0, 0])
            sums[0], sums[1] = sums[0] + 1, sums[1] + e.cost
        assert {(r.group["day"][:10], r.group["key"]): [r.requests, r.spend] for r in rows} == expected
        assert {r.group["key"] for r in rows} == {*map(str, kept), OTHER_KEYS}


async def test_the_credit_history_says_what_each_movement_was_newest_first(env):
    nc, pool, app, publisher = env
    commands, topups, refills = AccountCommands(app, password_kdf=TEST_KDF), TopUpCommands(app), AutoRefillCommands(app)
    account = (
        await asyncio.to_thread(commands.sign_up, f"c-{uuid.uuid4().hex[:6]}@example.com", "long enough")
    ).account_id
    (stranger,) = await accounts(app, 1)  # its seed grant is not in this account's history

    def history() -> None:
        commands.grant_credits(account, 5 * USD, "welcome, from support", "operator")
        topups.request(account, "stripe", "pi_card", 20 * USD)
        topups.confirm("stripe", "pi_card", 20 * USD, "stripe")
        topups.request(account, "bank_transfer", "MESH-REF1", 50 * USD)
        topups.confirm("bank_transfer", "MESH-REF1", 50 * USD, "operator")
        # an operator's grant that reads like a top-up stays a grant: no top-up has that reference
        commands.grant_credits(account, USD, "top-up via bank_transfer (MESH-NONE)", "operator")
        topups.refund("stripe", "pi_card", 5 * USD, "stripe")
        refills.succeeded(account, uuid.uuid4(), "pi_refill", 10 * USD)  # an off-session charge went through

    await asyncio.to_thread(history)
    await catch_up(nc, pool, publisher.stream, BILLING)
    async with pool.connection() as conn:
        rows = await billing.credit_history(conn, account, 50)
        assert [(r.kind, r.amount) for r in rows] == [
            ("auto_refill", 10 * USD),
            ("refund", -5 * USD),
            ("operator", USD),
            ("bank_transfer", 50 * USD),
            ("card", 20 * USD),
            ("operator", 5 * USD),
        ]
        assert rows[-1].reason == "welcome, from support" and rows[-1].by == "operator"
        assert [r.time for r in rows] == sorted((r.time for r in rows), reverse=True)
        assert [r.kind for r in await billing.credit_history(conn, account, 2)] == ["auto_refill", "refund"]
        assert [r.reason for r in await billing.credit_history(conn, stranger, 50)] == ["seed"]
