import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.account import Account
from domain.apikey import ApiKey
from domain.leases import BudgetExceeded, lease_amount, period_start

NOW = datetime(2026, 11, 24, 15, 30, tzinfo=timezone.utc)
LATER = NOW + timedelta(minutes=15)


def account_with(credits: int) -> Account:
    account = Account(email="a@example.com", password_hash="h", token_hash="t")
    account.grant_credits(credits, "seed", "test")
    return account


def key_with(cap: int | None, reset: str | None = None) -> ApiKey:
    key = ApiKey(account_id=uuid.uuid4(), label="k", key_hash="h", prefix="mk-", spend_cap=cap, default_model=None)
    if reset:
        key.change_spend_cap(cap, reset)
    return key


def test_open_leases_count_against_both_limits_until_settled():
    account, key = account_with(1000), key_with(600)
    first = uuid.uuid4()
    key.lease(first, 400, LATER, NOW)
    account.lease(first, 400, key.id, LATER)
    assert (key.leasable, account.leasable) == (200, 600)
    with pytest.raises(BudgetExceeded) as refused:
        key.lease(uuid.uuid4(), 201, LATER, NOW)
    assert refused.value.code == "key_spend_cap"
    key.settle_lease(first, 150)
    account.settle_lease(first, 150)
    assert (key.leasable, account.leasable) == (450, 850)
    key.settle_lease(first, 150)  # settling twice changes nothing
    assert key.leasable == 450


def test_lease_amount_names_the_limit_that_refuses():
    assert lease_amount(500, 10, None, 300, None, 0, 300, 0) == 150  # half of what is left
    assert lease_amount(500, 10, 200, 300, 200, 0, 300, 0) == 100
    assert lease_amount(50, 10, None, 3000, None, 0, 3000, 0) == 50
    assert lease_amount(500, 10, None, 15, None, 0, 15, 0) == 10  # the minimum, while it fits
    with pytest.raises(BudgetExceeded) as cap:
        lease_amount(500, 10, 5, 300, 100, 95, 300, 0)
    assert cap.value.code == "key_spend_cap" and "spend cap of 0.0000000001 USD" in cap.value.message
    with pytest.raises(BudgetExceeded) as balance:
        lease_amount(500, 10, None, 9, None, 0, 100, 91)
    assert balance.value.code == "account_balance" and not balance.value.held_by_leases
    assert "credits 0.0000000001 USD, 0.000000000091 USD spent; top up" in balance.value.message


def test_a_refusal_says_how_much_is_only_reserved_by_requests_in_flight():
    with pytest.raises(BudgetExceeded) as balance:
        lease_amount(500, 10, None, 9, None, 0, 100, 91, account_reserved=41)
    assert balance.value.held_by_leases
    assert "0.00000000005 USD spent and 0.000000000041 USD reserved for requests in flight" in balance.value.message


def test_inactive_keys_get_no_lease():
    key = key_with(None)
    key.disable("me")
    with pytest.raises(BudgetExceeded) as refused:
        key.lease(uuid.uuid4(), 1, LATER, NOW)
    assert refused.value.code == "key_disabled"
    key.enable("me")
    key.change_expiry(NOW - timedelta(seconds=1))
    with pytest.raises(BudgetExceeded) as expired:
        key.lease(uuid.uuid4(), 1, LATER, NOW)
    assert expired.value.code == "key_expired"


def test_a_periodic_cap_starts_afresh_each_period_as_an_event():
    key = key_with(100, "daily")
    key.start_period_if_due(NOW)
    lease = uuid.uuid4()
    key.lease(lease, 100, LATER, NOW)
    key.settle_lease(lease, 100)
    assert key.leasable == 0
    key.start_period_if_due(NOW + timedelta(hours=1))  # same day: nothing
    assert key.leasable == 0
    key.start_period_if_due(NOW + timedelta(days=1))
    assert key.leasable == 100
    names = [type(e).__name__ for e in key.collect_events()]
    assert names.count("SpendPeriodStarted") == 2


def test_period_starts():
    assert period_start("daily", NOW) == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert period_start("weekly", NOW) == datetime(2026, 11, 23, tzinfo=timezone.utc)  # a Monday
    assert period_start("monthly", NOW) == datetime(2026, 11, 1, tzinfo=timezone.utc)
    assert period_start(None, NOW) is None
