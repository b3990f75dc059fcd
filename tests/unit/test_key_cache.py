"""The gateway's key cache remembers unknown secret hashes briefly, in bounded memory, and forgets one the moment
a key event announces it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from domain.account import Account
from domain.apikey import ApiKey
from gateway import keys
from gateway.admission import KeyInfo
from gateway.keys import KeyCache

KEY = KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None)


class Directory:
    """The read model's answers, with a count of lookups."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyInfo] = {}
        self.lookups = 0

    async def __call__(self, key_hash: str) -> KeyInfo | None:
        self.lookups += 1
        return self.keys.get(key_hash)


def created(key_hash: str) -> ApiKey.Created:
    """KEY made with this secret hash, as the feed decodes it."""
    return ApiKey.Created(
        originator_id=KEY.key_id,
        originator_version=1,
        timestamp=datetime.now(timezone.utc),
        originator_topic="domain.apikey:ApiKey",
        account_id=KEY.account_id,
        label="ci",
        key_hash=key_hash,
        prefix="mk-abc",
        spend_cap=None,
        default_model=None,
    )


def test_an_unknown_hash_is_looked_up_once_until_it_expires(monkeypatch):
    directory = Directory()
    cache = KeyCache(directory)
    for _ in range(100):
        assert asyncio.run(cache.get("nope")) is None
    assert directory.lookups == 1
    monkeypatch.setattr(keys, "UNKNOWN_TTL", 0.0)
    cache._unknown.clear()
    asyncio.run(cache.get("nope"))
    asyncio.run(cache.get("nope"))
    assert directory.lookups == 3  # expired at once: every request asks again


def test_a_key_created_after_its_hash_was_unknown_works_at_once():
    directory = Directory()
    cache = KeyCache(directory)
    assert asyncio.run(cache.get("h")) is None
    directory.keys["h"] = KEY
    cache.apply(created("h"))
    assert asyncio.run(cache.get("h")) == KEY


def test_an_announced_hash_the_read_model_lacks_yet_is_not_remembered_as_unknown():
    directory = Directory()
    cache = KeyCache(directory)
    cache.apply(created("h"))  # the event outran the read model
    assert asyncio.run(cache.get("h")) is None
    directory.keys["h"] = KEY
    assert asyncio.run(cache.get("h")) == KEY


def test_a_rotated_to_secret_is_announced_too():
    directory = Directory()
    cache = KeyCache(directory)
    assert asyncio.run(cache.get("new")) is None
    directory.keys["new"] = KEY
    now = datetime.now(timezone.utc)
    rotated = ApiKey.Rotated(
        originator_id=KEY.key_id,
        originator_version=2,
        timestamp=now,
        key_hash="new",
        prefix="mk-new",
        previous_hash="old",
        previous_valid_until=now,
    )
    cache.apply(rotated)
    assert asyncio.run(cache.get("new")) == KEY


def test_unknown_hashes_are_bounded_the_oldest_forgotten_first(monkeypatch):
    monkeypatch.setattr(keys, "MAX_UNKNOWN", 3)
    directory = Directory()
    cache = KeyCache(directory)
    for name in ("a", "b", "c", "d"):
        asyncio.run(cache.get(name))
    assert list(cache._unknown) == ["b", "c", "d"]
    asyncio.run(cache.get("a"))
    assert directory.lookups == 5  # "a" had been forgotten


def test_a_gap_in_the_feed_forgets_unknown_hashes():
    directory = Directory()
    cache = KeyCache(directory)
    asyncio.run(cache.get("h"))
    cache.clear()
    directory.keys["h"] = KEY
    assert asyncio.run(cache.get("h")) == KEY


def account_event(cls: type) -> object:
    """A suspension or a resumption of KEY's account, as the feed decodes it."""
    now = datetime.now(timezone.utc)
    return cls(originator_id=KEY.account_id, originator_version=2, timestamp=now, reason="r", operator="token")


def test_a_suspension_heard_on_the_wire_refuses_every_cached_key_of_the_account_and_a_resumption_restores():
    directory = Directory()
    other = KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None)
    directory.keys.update({"a": KEY, "b": other})
    cache = KeyCache(directory)
    asyncio.run(cache.get("a")), asyncio.run(cache.get("b"))
    changed: list[KeyInfo] = []
    cache.on_change = changed.append
    now = datetime.now(timezone.utc)
    cache.apply_account(account_event(Account.Suspended))
    refusal = asyncio.run(cache.get("a")).refusal(now)
    assert refusal is not None and (refusal.status, refusal.code) == (402, "account_suspended")
    assert asyncio.run(cache.get("b")).refusal(now) is None  # another account's key
    assert [k.key_id for k in changed] == [KEY.key_id]
    cache.apply_account(account_event(Account.Resumed))
    assert asyncio.run(cache.get("a")).refusal(now) is None
    assert directory.lookups == 2  # all from memory after the first loads
