"""Refused requests, counted on a real NATS and PostgreSQL: one event per key per flush, counts by code in the
billing read model, an event sent again (a lost acknowledgement) counted once, and counts kept while NATS cannot
take them."""

from __future__ import annotations

import uuid

import msgspec

from domain.usage import RequestsRefused
from gateway.refusals import Refusals
from projections import billing
from projections.runner import ProjectionRunner
from projections.source import StreamSource
from tests.integration.test_projections import BILLING, env  # noqa: F401 - the fixture


async def stored_refusals(nc, stream: str) -> list[RequestsRefused]:
    messages = await StreamSource(nc, stream).read(1, limit=100)
    return [msgspec.json.decode(m.body, type=RequestsRefused) for m in messages if m.topic == "usage.refused"]


async def test_refusals_are_one_event_per_key_and_counted_by_code(env):  # noqa: F811
    nc, pool, _, stream = env
    account, capped, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    refusals = Refusals(nc, stream)
    for _ in range(22):
        refusals.count(account, capped, "key_spend_cap")
    refusals.count(account, capped, "invalid_request")
    refusals.count(account, other, None)
    await refusals.flush()
    await refusals.flush()  # nothing new: nothing sent

    events = await stored_refusals(nc, stream)
    assert sorted((e.key_id, tuple(sorted(e.counts.items()))) for e in events) == sorted(
        [(capped, (("invalid_request", 1), ("key_spend_cap", 22))), (other, (("refused", 1),))]
    )
    assert all(e.account_id == account and e.since <= e.until for e in events)

    # the same event again, later than JetStream's duplicate window would catch: counted once all the same
    again = events[0]
    await nc.request(
        f"{stream.lower()}.usage.{account}",
        msgspec.json.encode(again),
        headers={"Mesh-Topic": "usage.refused", "Mesh-Originator-Id": str(again.refusal_id)},
        timeout=2,
    )
    await ProjectionRunner(BILLING, StreamSource(nc, stream), pool).catch_up()
    async with pool.connection() as conn:
        stats = await billing.key_stats(conn, account)
        assert stats[capped].refused == {"key_spend_cap": 22, "invalid_request": 1}
        assert stats[capped].refused_total == 23 and stats[capped].requests == 0  # refusals are not requests
        assert stats[other].refused == {"refused": 1}
        assert await billing.refusals_by_key(conn, account, key_id=other) == {other: {"refused": 1}}
        later = events[0].until.replace(year=events[0].until.year + 1)
        assert await billing.refusals_by_key(conn, account, start=later) == {}


async def test_counts_nats_does_not_take_are_sent_again_under_their_own_id(env):  # noqa: F811
    nc, _, _, stream = env
    account, key = uuid.uuid4(), uuid.uuid4()
    nowhere = Refusals(nc, "NO_SUCH_STREAM_" + uuid.uuid4().hex[:6].upper())  # no stream takes its subjects
    nowhere.count(account, key, "rate_limit_exceeded")
    await nowhere.flush()
    assert await stored_refusals(nc, stream) == []
    nowhere.count(account, key, "rate_limit_exceeded")  # counted meanwhile: a new event of its own

    nowhere.stream = stream  # NATS takes them again
    await nowhere.flush()
    events = await stored_refusals(nc, stream)
    assert [e.counts for e in events] == [{"rate_limit_exceeded": 1}, {"rate_limit_exceeded": 1}]
    assert len({e.refusal_id for e in events}) == 2
