"""The dashboard's one-time views on a real PostgreSQL: taken once, by the session and account that made them,
within their time, at most so many per account, and sealed at rest."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from api.services import one_time_views
from api.services.one_time_views import TABLE, VIEWS_PER_ACCOUNT, OneTimeViews, TooLarge

SESSION, OTHER_SESSION = "mt-session-one", "mt-session-two"
SECRET = "mk-" + "s" * 43


@pytest.fixture
async def views(database_url):
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
    await pool.open()
    yield OneTimeViews(pool)
    await pool.close()


async def test_a_view_is_taken_once_by_its_session_and_account(views):
    account = uuid.uuid4()
    view = await views.put(account, SESSION, {"secret": SECRET})
    assert await views.take(uuid.uuid4(), SESSION, view) is None  # another account: not found, and left alone
    assert await views.take(account, OTHER_SESSION, view) is None  # another session cannot open it...
    second = await views.put(account, SESSION, {"secret": SECRET})
    assert await views.take(account, SESSION, second) == {"secret": SECRET}
    assert await views.take(account, SESSION, second) is None  # ...and a reload finds it gone


async def test_nothing_readable_stays_at_rest(views, database_url):
    await views.put(uuid.uuid4(), SESSION, {"secret": SECRET})
    with psycopg.connect(database_url) as conn:
        (sealed,) = conn.execute(f"SELECT sealed FROM {TABLE}").fetchone()
    assert SECRET.encode() not in bytes(sealed) and b"secret" not in bytes(sealed)


async def test_a_view_expires_and_an_account_keeps_only_the_newest(views, monkeypatch):
    account = uuid.uuid4()
    made = [await views.put(account, SESSION, {"n": n}) for n in range(VIEWS_PER_ACCOUNT + 2)]
    assert await views.take(account, SESSION, made[0]) is None and await views.take(account, SESSION, made[1]) is None
    assert await views.take(account, SESSION, made[-1]) == {"n": VIEWS_PER_ACCOUNT + 1}

    monkeypatch.setattr(one_time_views, "VIEW_SECONDS", 0)
    stale = await views.put(account, SESSION, {"n": "stale"})
    await asyncio.sleep(0.01)
    assert await views.take(account, SESSION, stale) is None


async def test_too_much_is_refused_and_an_id_it_never_made_finds_nothing(views):
    with pytest.raises(TooLarge):
        await views.put(uuid.uuid4(), SESSION, {"answer": "x" * one_time_views.MAX_PAYLOAD_BYTES})
    assert await views.take(uuid.uuid4(), SESSION, "x" * 10_000) is None
    assert await views.take(uuid.uuid4(), SESSION, "no-such-view") is None
