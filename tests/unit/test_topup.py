import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.account import InvalidReason
from domain.topup import TopUp, TopUpError

NOW = datetime(2026, 11, 24, tzinfo=timezone.utc)


def topup(**kwargs) -> TopUp:
    return TopUp(account_id=uuid.uuid4(), provider="stripe", reference="pi_1", amount=10**13, **kwargs)


def test_a_payment_is_credited_once_however_often_it_is_reported():
    t = topup()
    assert t.succeed(10**13, NOW) is True
    assert t.succeed(10**13, NOW) is False
    assert t.succeed(10**13, NOW + timedelta(days=9)) is False
    assert [type(e).__name__ for e in t.collect_events()] == ["Requested", "Succeeded"]


def test_the_id_is_the_providers_reference():
    assert TopUp.create_id("stripe", "pi_1") == topup().id
    assert TopUp.create_id("stripe", "pi_2") != topup().id


def test_refunds_are_cumulative_and_never_exceed_what_was_received():
    t = topup()
    t.succeed(10**13, NOW)
    assert t.refund_to(3 * 10**12) == 3 * 10**12
    assert t.refund_to(3 * 10**12) == 0  # the same refund reported again
    assert t.refund_to(10**14) == 7 * 10**12  # capped at what was paid
    assert t.refunded == 10**13


def test_disputes_are_counted_once_each():
    t = topup()
    assert t.dispute("dp_1", 10**13) == 0  # nothing received yet: nothing to take back
    t.succeed(10**13, NOW)
    assert t.dispute("dp_1", 10**13) == 10**13
    assert t.dispute("dp_1", 10**13) == 0


def test_an_expired_transfer_cannot_be_confirmed():
    t = TopUp(
        account_id=uuid.uuid4(),
        provider="bank_transfer",
        reference="MESH-1",
        amount=10**13,
        expires_at=NOW + timedelta(days=14),
    )
    t.expire(NOW)  # not yet due: nothing happens
    assert t.status == "pending"
    t.expire(NOW + timedelta(days=15))
    assert t.status == "expired"
    with pytest.raises(TopUpError):
        t.succeed(10**13, NOW + timedelta(days=15))


def test_a_refund_and_a_dispute_reported_before_the_payment_are_held_then_taken_once():
    t = topup()
    assert t.refund_to(2 * 10**12) == 0 and t.refund_to(2 * 10**12) == 0  # held, once
    assert t.dispute("dp_1", 3 * 10**12) == 0 and t.dispute("dp_1", 3 * 10**12) == 0
    t.succeed(10**13, NOW)
    assert t.apply_held() == 5 * 10**12
    assert t.apply_held() == 0  # applied once
    assert t.refund_to(2 * 10**12) == 0 and t.dispute("dp_1", 3 * 10**12) == 0  # reported again after: nothing
    assert [type(e).__name__ for e in t.collect_events()] == [
        "Requested",
        "RefundHeld",
        "DisputeHeld",
        "Succeeded",
        "Refunded",
        "Disputed",
    ]


def test_only_a_pending_transfer_is_rejected_and_a_rejected_one_is_never_credited():
    t = TopUp(account_id=uuid.uuid4(), provider="bank_transfer", reference="MESH-2", amount=10**13)
    with pytest.raises(InvalidReason, match="reason"):
        t.reject(" ", "token")
    t.reject("never sent", "token")
    t.reject("again", "token")  # rejected already: nothing more
    assert t.status == "rejected" and len(t.collect_events()) == 2  # requested, rejected
    with pytest.raises(TopUpError, match="rejected"):
        t.succeed(10**13, NOW)
    paid = TopUp(account_id=uuid.uuid4(), provider="bank_transfer", reference="MESH-3", amount=10**13)
    paid.succeed(10**13, NOW, "token")
    with pytest.raises(TopUpError, match="only a pending one"):
        paid.reject("late", "token")
    assert paid.collect_events()[-1].operator == "token"
