import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.account import Account
from domain.autorefill import NoSavedCard
from domain.money import InvalidCreditGrant

USD = 10**12


def account() -> Account:
    a = Account(email="a@example.com", password_hash="h", token_hash="t")
    a.configure_auto_refill(threshold=5 * USD, amount=20 * USD, payment_method="pm_1", max_failures=3)
    return a


def test_one_refill_per_crossing():
    a = account()
    first = uuid.uuid4()
    assert a.trigger_auto_refill(first, 4 * USD) is True
    assert a.trigger_auto_refill(uuid.uuid4(), 3 * USD) is False  # already refilling
    a.auto_refill_succeeded(first, "pi_1")
    assert a.trigger_auto_refill(uuid.uuid4(), 4 * USD) is False  # same crossing: not re-armed yet
    a.rearm_auto_refill(24 * USD)
    assert a.trigger_auto_refill(uuid.uuid4(), 2 * USD) is True  # a new crossing
    assert a.trigger_auto_refill(uuid.uuid4(), 6 * USD) is False


def test_failures_retry_the_crossing_then_turn_it_off():
    a = account()
    for _ in range(3):
        refill = uuid.uuid4()
        assert a.trigger_auto_refill(refill, 1 * USD) is True
        a.auto_refill_failed(refill, "card declined")
    assert a.auto_refill is None
    names = [type(e).__name__ for e in a.collect_events()]
    assert names.count("AutoRefillFailed") == 3 and names[-1] == "AutoRefillDisabled"
    assert a.trigger_auto_refill(uuid.uuid4(), 1 * USD) is False


def test_a_success_resets_the_failure_count():
    a = account()
    failed, ok = uuid.uuid4(), uuid.uuid4()
    a.trigger_auto_refill(failed, USD)
    a.auto_refill_failed(failed, "declined")
    a.trigger_auto_refill(ok, USD)
    a.auto_refill_succeeded(ok, "pi_2")
    assert a.refill_failures == 0 and a.auto_refill is not None


def test_a_saved_card_is_what_auto_refill_charges_and_a_later_card_replaces_it():
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    a = Account(email="a@example.com", password_hash="h", token_hash="t")
    with pytest.raises(NoSavedCard):
        a.configure_auto_refill(5 * USD, 20 * USD, None, 3)
    a.save_auto_refill_card("card_1", "Visa", "4242", 12, 2034, now)
    a.configure_auto_refill(5 * USD, 20 * USD, None, 3)
    assert a.auto_refill is not None and a.auto_refill.payment_method == "card_1"
    a.collect_events()
    a.save_auto_refill_card("card_1", "Visa", "4242", 12, 2034, now + timedelta(seconds=5))  # the same card again
    a.save_auto_refill_card("pm_0", "visa", "0005", 1, 2030, now - timedelta(seconds=1))  # a webhook come late
    assert a.collect_events() == [] and a.auto_refill.payment_method == "card_1"
    a.save_auto_refill_card("pm_2", "mastercard", "4444", 3, 2031, now + timedelta(seconds=1))
    assert a.auto_refill.payment_method == "pm_2" and a.auto_refill_card.last4 == "4444"
    for bad in (
        ("tok_1", "visa", "4242", 1, 2030),
        ("pm_3", "visa", "42", 1, 2030),
        ("pm_3", "visa", "4242", 13, 2030),
    ):
        with pytest.raises(InvalidCreditGrant):
            a.save_auto_refill_card(*bad, now + timedelta(days=1))
