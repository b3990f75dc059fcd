"""The log's invariants (`mesh audit verify`), over events made by hand: each holds on a clean log and each
violation is named."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.account import Account
from domain.apikey import ApiKey
from domain.catalog import ModelSettings
from domain.invariants import LEASE_REAP_GRACE, PRICE_SPREAD, LogInvariants
from domain.pricing import Price
from domain.usage import UsageRecorded

pytestmark = pytest.mark.unit

T0 = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
PRICE = Price(500_000_000_000, 1_500_000_000_000)
ACCOUNT, KEY = uuid.uuid4(), uuid.uuid4()


def event(cls: type, originator_id: uuid.UUID, when: datetime = T0, **fields):
    names = {f.name for f in dataclasses.fields(cls)}
    envelope = {"originator_id": originator_id, "originator_version": 1, "timestamp": when}
    if "originator_topic" in names:
        envelope["originator_topic"] = "test"
    return cls(**envelope, **fields)


def usage(when: datetime = T0, price: Price = PRICE, lease_id=None, cost=None, trace_id=None, **fields):
    prompt, completion = 1000, 2000
    return UsageRecorded(
        trace_id=trace_id or uuid.uuid4(),
        account_id=ACCOUNT,
        key_id=KEY,
        model="acme/m",
        requested_model=None,
        provider="acme",
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_per_1k=price.prompt_per_1k,
        completion_per_1k=price.completion_per_1k,
        cost=price.cost(prompt, completion) if cost is None else cost,
        status="ok",
        http_status=200,
        timestamp=when,
        latency_us=1,
        lease_id=lease_id,
        **fields,
    )


def key(spend_cap=None, cap_reset=None):
    return event(
        ApiKey.Created,
        KEY,
        T0 - timedelta(days=3),
        account_id=ACCOUNT,
        label="k",
        key_hash="h",
        prefix="p",
        spend_cap=spend_cap,
        default_model=None,
        cap_reset=cap_reset,
    )


def lease(lease_id, amount, expires=T0 + timedelta(minutes=5)):
    return [
        event(Account.BudgetLeased, ACCOUNT, lease_id=lease_id, amount=amount, key_id=KEY, expires_at=expires),
        event(ApiKey.BudgetLeased, KEY, lease_id=lease_id, amount=amount, expires_at=expires),
    ]


def settle(lease_id, spent):
    return [
        event(ApiKey.LeaseSettled, KEY, lease_id=lease_id, spent=spent),
        event(Account.LeaseSettled, ACCOUNT, lease_id=lease_id, spent=spent),
    ]


def check(events, now=T0 + timedelta(minutes=1), prices=None, only=None):
    """(invariant, subject) of each violation (`only`: of that invariant; the events of a test about one need not
    make a whole log)."""
    log = LogInvariants(prices if prices is not None else {"acme/m": PRICE})
    for position, e in enumerate(events, 1):
        log.observe(position, e)
    return [(v.invariant, v.subject) for v in log.violations(now) if only in (None, v.invariant)]


def test_a_clean_log_holds_every_invariant():
    first, second = uuid.uuid4(), uuid.uuid4()
    one, two = usage(lease_id=first), usage(lease_id=second)
    events = [key(spend_cap=10**13), *lease(first, 10**13), one, *settle(first, one.cost), *lease(second, 10**12), two]
    assert check(events + [one]) == []  # a copy of one usage event (a re-publish) is counted once


def test_spend_by_leases_must_equal_usage():
    first = uuid.uuid4()
    one = usage(lease_id=first)
    assert check([key(), *lease(first, 10**13), one, *settle(first, one.cost - 1)]) == [("spend", f"account {ACCOUNT}")]


def test_a_usage_must_be_charged_the_price_in_force_when_it_started():
    changed = Price(600_000_000_000, 1_500_000_000_000)
    change = event(
        ModelSettings.PriceChanged,
        uuid.uuid4(),
        T0,
        model_id="acme/m",
        prompt_per_1k=changed.prompt_per_1k,
        completion_per_1k=changed.completion_per_1k,
        by="operator",
    )
    late_old = usage(T0 + PRICE_SPREAD / 2)  # a gateway that had not heard yet
    new = usage(T0 + PRICE_SPREAD * 2, price=changed)
    stale = usage(T0 + PRICE_SPREAD * 2)
    early_new = usage(T0 - timedelta(seconds=1), price=changed)
    found = check([change, late_old, new, stale, early_new], only="price")
    assert found == [("price", f"usage {stale.trace_id}"), ("price", f"usage {early_new.trace_id}")]
    assert check([usage()], prices={}, only="price") != []  # a model the catalog does not know


def test_a_model_added_at_runtime_is_charged_the_price_it_was_added_at():
    added = event(
        ModelSettings.Added,
        uuid.uuid4(),
        T0,
        model_id="acme/m",
        provider="acme",
        upstream="m",
        prompt_per_1k=PRICE.prompt_per_1k,
        completion_per_1k=PRICE.completion_per_1k,
        by="operator",
    )
    after = usage(T0 + timedelta(seconds=1))
    assert check([added, after], prices={}, only="price") == []
    other = usage(T0 + timedelta(seconds=1), price=Price(1_000_000_000, 1_000_000_000))
    assert check([added, other], prices={}, only="price") == [("price", f"usage {other.trace_id}")]


def test_a_usage_must_cost_its_tokens_at_its_prices():
    wrong = usage(cost=PRICE.cost(1000, 2000) + 1)
    assert check([wrong], only="price") == [("price", f"usage {wrong.trace_id}")]


def test_leases_within_their_amount_granted_before_settled_and_not_left_open():
    over, unknown, left = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    found = check(
        [*lease(over, 10), *settle(over, 0), *lease(left, 10, expires=T0), *settle(unknown, 0)],
        now=T0 + LEASE_REAP_GRACE * 2,
        only="lease",
    )
    assert ("lease", f"lease {left}") in found and ("lease", f"lease {unknown}") in found
    assert ("lease", f"lease {over}") not in found
    spent_more = uuid.uuid4()
    assert ("lease", f"lease {spent_more}") in check([*lease(spent_more, 10), *settle(spent_more, 11)])
    assert check([*lease(left, 10, expires=T0)], now=T0 + LEASE_REAP_GRACE / 2) == []  # the reaper still has time


def test_a_trace_id_billed_twice():
    one = usage()
    again = usage(when=T0 + timedelta(seconds=1), trace_id=one.trace_id)
    assert check([one, again], only="trace") == [("trace", f"usage {one.trace_id}")]


def test_a_key_above_its_cap_in_a_period():
    cost = usage().cost
    today = [usage(T0), usage(T0 + timedelta(hours=1))]
    tomorrow = [usage(T0 + timedelta(days=1))]
    daily = key(spend_cap=2 * cost, cap_reset="daily")
    assert check([daily, *today, *tomorrow], only="cap") == []
    assert check([daily, *today, usage(T0 + timedelta(hours=2))], only="cap") == [("cap", f"key {KEY}")]
    assert check([key(spend_cap=2 * cost), *today, *tomorrow], only="cap") == [("cap", f"key {KEY}")]  # all time
