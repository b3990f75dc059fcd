"""Snapshots (commands/snapshots.py): an aggregate comes back from its snapshot exactly as it was, every
attribute included, and a snapshot that cannot be read counts as none."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import MapperDeserialisationError, StoredEvent

from commands import snapshots
from commands.mapper import MsgspecMapper
from domain.account import Account
from domain.apikey import ApiKey
from domain.money import MAX_AMOUNT

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def account_with_everything() -> Account:
    """An account through every kind of event that sets an attribute, with each optional attribute set."""
    account = Account(email="a@example.com", password_hash="h1", token_hash="t1", token_expires_at=NOW)
    account.issue_token("t2", NOW + timedelta(days=1))
    account.renew_token("t2", NOW + timedelta(days=2))
    account.change_password("h2", "t3", NOW + timedelta(days=3))
    account.rehash_password("h3")
    for _ in range(10):  # credits past 64 bits
        account.grant_credits(MAX_AMOUNT, "top-up", "test")
    account.link_stripe_customer("cus_123")
    account.debit_credits(5, "correction", "test")
    account.save_auto_refill_card("pm_123", "visa", "4242", 12, 2034, NOW)
    account.configure_auto_refill(10**12, 10**13, None, 3)
    assert account.trigger_auto_refill(uuid.uuid4(), 1)
    leased, settled = uuid.uuid4(), uuid.uuid4()
    account.lease(leased, 1_000, uuid.uuid4(), NOW + timedelta(seconds=30))
    account.extend_lease(leased, NOW + timedelta(seconds=60))
    account.lease(settled, 2_000, uuid.uuid4(), NOW + timedelta(seconds=30))
    account.settle_lease(settled, 1_234)
    return account


def key_with_everything() -> ApiKey:
    key = ApiKey(
        account_id=uuid.uuid4(),
        label="k",
        key_hash="kh1",
        prefix="mesh-abc",
        spend_cap=10**12,
        default_model="gpt-test",
        allowed_models=["gpt-test", "claude-test"],
        expires_at=NOW + timedelta(days=30),
        cap_reset="daily",
        fit_to_budget=True,
    )
    key.relabel("renamed")
    key.start_period_if_due(NOW)
    leased, settled = uuid.uuid4(), uuid.uuid4()
    key.lease(leased, 1_000, NOW + timedelta(seconds=30), NOW)
    key.extend_lease(leased, NOW + timedelta(seconds=60))
    key.lease(settled, 2_000, NOW + timedelta(seconds=30), NOW)
    key.settle_lease(settled, 1_500)
    key.rotate("kh2", "mesh-def", NOW, timedelta(hours=1))
    key.disable("test")
    return key


def state_of(aggregate) -> dict:
    return {name: value for name, value in vars(aggregate).items() if name != "_pending_events"}


def through_the_store(aggregate):
    mapper = MsgspecMapper(transcoder=None)  # type: ignore[arg-type]
    stored = mapper.to_stored_event(Snapshot.take(aggregate))
    assert snapshots.is_snapshot_topic(stored.topic)
    return mapper.to_domain_event(stored).mutate(None)


@pytest.mark.parametrize("make", [account_with_everything, key_with_everything, lambda: Account("b@x.io", "h", "t")])
def test_an_aggregate_comes_back_from_its_snapshot_exactly(make):
    aggregate = make()
    restored = through_the_store(aggregate)
    assert type(restored) is type(aggregate)
    assert (restored.id, restored.version) == (aggregate.id, aggregate.version)
    assert state_of(restored) == state_of(aggregate)
    # and it goes on from there as the original does (each event stamps its own time)
    lease = uuid.uuid4()
    for copy in (aggregate, restored):
        if isinstance(copy, Account):
            copy.grant_credits(100, "more", "test")
            copy.lease(lease, 10, uuid.uuid4(), NOW + timedelta(seconds=5))
        else:
            copy.enable("test")
            copy.lease(lease, 10, NOW + timedelta(seconds=5), NOW)
    restored._modified_on = aggregate.modified_on
    assert state_of(restored) == state_of(aggregate)


def test_an_attribute_the_state_struct_does_not_name_is_refused():
    account = account_with_everything()
    account.nickname = "added without adding it to AccountState"
    with pytest.raises(msgspec.ValidationError, match="nickname"):
        snapshots.to_stored(Snapshot.take(account))


@pytest.mark.parametrize(
    "topic, state",
    [
        ("snapshot.account", b'{"email": "a@b.c"}'),  # an older layout: attributes missing
        ("snapshot.account", b"not json"),
        ("snapshot.teapot", b"{}"),  # an aggregate this Mesh does not snapshot
    ],
)
def test_an_unreadable_snapshot_counts_as_none(topic, state):
    stored = StoredEvent(uuid.uuid4(), 7, topic, state)
    with pytest.raises(MapperDeserialisationError):
        snapshots.from_stored(stored)

    class OneSnapshot:
        def select_events(self, *args, **kwargs):
            return [stored]

    store = snapshots.SnapshotStore(mapper=MsgspecMapper(transcoder=None), recorder=OneSnapshot())  # type: ignore[arg-type]
    assert list(store.get(stored.originator_id, desc=True, limit=1)) == []
