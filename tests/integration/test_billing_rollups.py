"""Billing without per-request rows: spend over any window, and the balance at any instant, are exact from the
daily and hourly rollups plus the recent requests at the edges; each trace id counts once."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from projections import billing
from projections.spend_history import spend_history
from tests.integration.test_logs import BILLING, NOW, accounts, catch_up, env, publish_again, usage  # noqa: F401


async def test_spend_over_any_window_and_balance_at_any_instant_are_exact(env):
    nc, pool, app, publisher = env
    (account_id,) = await accounts(app, 1)
    rng = random.Random(5)
    keys = [uuid.uuid4(), uuid.uuid4()]
    events = [usage(account_id, NOW - timedelta(seconds=rng.randint(0, 6 * 86_400)), rng, keys) for _ in range(200)]
    for event in events:
        await publisher.publish(event)
    for event in events[:5]:
        await publish_again(nc, publisher.stream, event)  # counted once all the same
    await catch_up(nc, pool, publisher.stream, BILLING)

    moments = sorted(e.timestamp for e in events)
    windows = [(None, None), (moments[0], None), (None, moments[-1])]
    windows += [tuple(sorted(rng.sample(moments, 2))) for _ in range(30)]
    windows += [(m, m + timedelta(minutes=rng.randint(1, 90))) for m in rng.sample(moments, 10)]
    async with pool.connection() as conn:
        for start, end in windows:
            inside = [
                e for e in events if (start is None or e.timestamp >= start) and (end is None or e.timestamp < end)
            ]
            for group_by in ([], ["key"], ["model", "day"], ["hour"]):
                rows = await spend_history(conn, account_id, group_by, start, end)
                assert sum(r.spend for r in rows) == sum(e.cost for e in inside), (start, end, group_by)
                assert sum(r.requests for r in rows) == len(inside)
                assert sum(r.errors for r in rows) == sum(e.status != "ok" for e in inside)
                assert sum(r.cached_prompt_tokens for r in rows) == sum(e.cached_prompt_tokens for e in inside)
                assert sum(r.reasoning_tokens for r in rows) == sum(e.reasoning_tokens for e in inside)
            stats = await billing.key_stats(conn, account_id, start, end)
            assert {k: s.spend for k, s in stats.items()} == {
                k: sum(e.cost for e in inside if e.key_id == k) for k in keys if any(e.key_id == k for e in inside)
            }
        for moment in rng.sample(moments, 20):
            at = await billing.balance_at(conn, account_id, moment)
            assert at.spend == sum(e.cost for e in events if e.timestamp <= moment)
        hourly = await spend_history(conn, account_id, ["hour"], None, None)
        assert all(r.group["hour"].endswith(":00:00Z") for r in hourly)


async def test_a_billing_model_built_before_the_rollups_is_found_and_rebuilt(env):
    from projections.readmodel import ensure_schema
    from projections.rebuild import rebuild
    from tests.integration.test_logs import DIRECTORY, LOGS, money

    nc, pool, app, publisher = env
    (account_id,) = await accounts(app, 1)
    rng = random.Random(6)
    for _ in range(20):
        await publisher.publish(usage(account_id, NOW, rng, [uuid.uuid4()]))
    await catch_up(nc, pool, publisher.stream, BILLING)
    before = await money(pool, [account_id])
    async with pool.connection() as conn:
        assert await ensure_schema(conn, [BILLING, DIRECTORY, LOGS]) == []
        await conn.execute("drop table spend_daily_g1 cascade")  # what an older Mesh left: no daily rollup
        await conn.commit()
        assert await ensure_schema(conn, [BILLING, DIRECTORY, LOGS]) == [BILLING]  # made again, empty
    await rebuild(BILLING, nc, pool, publisher.stream)
    async with pool.connection() as conn:
        assert await ensure_schema(conn, [BILLING]) == []
    assert await money(pool, [account_id]) == before
