"""What subscribers may see of the log (domain/public_events.py): no secret's hash in any public event, no lease
bookkeeping, and an account's events told apart from another's by class."""

from __future__ import annotations

from datetime import datetime, timezone
from uuid import uuid4

import msgspec
import pytest

from api.services.events import EventService, Ownership, StreamGate
from api.services.errors import Busy, Invalid
from domain.account import Account
from domain.apikey import ApiKey
from domain.events import EVENT_TYPES
from domain.public_events import ACCOUNT_EVENT_NAMES, PUBLIC_EVENT_NAMES, is_public, public_fields, visible_fields
from domain.usage import UsageRecorded
from commands.event_log import Followed

SECRET_WORDS = ("hash", "secret", "password")


def test_no_public_event_keeps_a_field_that_names_a_secret():
    leaked = [
        f"{name}.{field}"
        for name, cls in EVENT_TYPES.items()
        if is_public(cls)
        for field in visible_fields(cls)
        if any(word in field for word in SECRET_WORDS)
    ]
    assert not leaked
    assert "token_expires_at" in visible_fields(Account.Registered)  # a field is hidden by name, not by a word


def test_lease_bookkeeping_and_claims_are_never_public():
    for name in (
        "account.budget_leased",
        "key.lease_settled",
        "key.lease_extended",
        "email.claimed",
        "template_name.claimed",
        "holdings.key_added",
        "account.password_rehashed",
        "usage.body_recorded",
    ):
        assert name not in PUBLIC_EVENT_NAMES
    assert {"model.price_changed", "invite.created"} <= set(PUBLIC_EVENT_NAMES) - set(ACCOUNT_EVENT_NAMES)
    assert {"usage.recorded", "key.created", "account.credits_granted", "topup.succeeded"} <= set(ACCOUNT_EVENT_NAMES)


def test_public_fields_leave_out_the_hashes():
    event = ApiKey.Rotated(
        originator_id=uuid4(),
        originator_version=3,
        timestamp=datetime.now(timezone.utc),
        key_hash="h1",
        prefix="mk-abc",
        previous_hash="h0",
        previous_valid_until=datetime.now(timezone.utc),
    )
    assert set(public_fields(event)) == {"timestamp", "prefix", "previous_valid_until"}


def followed(event, aggregate_id) -> Followed:
    return Followed(1, datetime.now(timezone.utc), "x", str(aggregate_id), 1, event)


def test_ownership_follows_the_aggregates_an_account_opens():
    me, other, key = uuid4(), uuid4(), uuid4()
    owner = Ownership(me, set())
    now = datetime.now(timezone.utc)
    granted = Account.CreditsGranted(
        originator_id=me, originator_version=2, timestamp=now, amount=1, reason="r", granted_by="operator"
    )
    assert owner.owns(followed(granted, me))
    assert not owner.owns(followed(granted, other))
    revoked = ApiKey.Revoked(originator_id=key, originator_version=2, timestamp=now, by="account")
    assert not owner.owns(followed(revoked, key))  # not known as mine yet
    created = ApiKey.Created(
        originator_id=key,
        originator_version=1,
        timestamp=now,
        originator_topic="t",
        account_id=me,
        label="k",
        key_hash="h",
        prefix="p",
        spend_cap=None,
        default_model=None,
        allowed_models=None,
        expires_at=None,
        cap_reset=None,
        fit_to_budget=False,
    )
    assert owner.owns(followed(created, key))
    assert owner.owns(followed(revoked, key))
    theirs = msgspec.structs.replace(_usage(me), account_id=other)
    assert owner.owns(followed(_usage(me), uuid4())) and not owner.owns(followed(theirs, uuid4()))


def _usage(account_id) -> UsageRecorded:
    return UsageRecorded(
        trace_id=uuid4(),
        account_id=account_id,
        key_id=uuid4(),
        model="m",
        requested_model=None,
        provider="p",
        prompt_tokens=1,
        completion_tokens=1,
        prompt_per_1k=1,
        completion_per_1k=1,
        cost=2,
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=1,
    )


def test_types_are_checked_against_the_catalogue():
    service = EventService(None, "MESH", None, None, None)  # type: ignore[arg-type]
    assert service.event_types("usage.recorded, key.created", operator=False) == {UsageRecorded, ApiKey.Created}
    assert service.event_types(None, operator=False) is None
    with pytest.raises(Invalid) as refused:
        service.event_types("usage.recorded,key.budget_leased", operator=False)
    assert "key.budget_leased" in refused.value.message and "usage.recorded" in refused.value.message
    with pytest.raises(Invalid):
        service.event_types("model.price_changed", operator=False)
    assert service.event_types("model.price_changed", operator=True)


def test_the_gate_bounds_streams_per_account_and_in_all():
    gate, me = StreamGate(per_account=2, total=3), uuid4()
    with gate.hold(me), gate.hold(me):
        with pytest.raises(Busy, match="2 event streams"):
            gate.check(me)
        with gate.hold(uuid4()):
            with pytest.raises(Busy, match="3 event streams are open on this server"):
                gate.check(uuid4())
    assert gate.open == {}
