"""What each auto-refill event changes (domain/autorefill.py): one change, made by the Account on its state and
written by the billing read model to its row."""

import uuid
from datetime import datetime, timezone

import msgspec

from domain.account import AUTO_REFILL_EVENTS, Account
from domain.autorefill import AutoRefill, AutoRefillState, ChangesAutoRefill, RefillChange, SavedCard
from domain.events import events_of

USD = 10**12
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def changes(account: Account) -> list[RefillChange]:
    return [e.refill_change() for e in account.collect_events() if isinstance(e, ChangesAutoRefill)]


def replayed(changes: list[RefillChange], state: AutoRefillState | None = None) -> AutoRefillState:
    state = state or AutoRefillState()
    for change in changes:
        state = state.changed(change)
    return state


def test_the_state_the_changes_make_is_the_accounts_through_a_refills_life():
    a = Account(email="a@example.com", password_hash="h", token_hash="t")
    assert a.refill_state == AutoRefillState()
    a.save_auto_refill_card("pm_1", "visa", "4242", 12, 2034, NOW)
    a.configure_auto_refill(5 * USD, 20 * USD, None, max_failures=2)
    first, second = uuid.uuid4(), uuid.uuid4()
    a.trigger_auto_refill(first, USD)
    a.auto_refill_failed(first, "declined")
    a.trigger_auto_refill(second, USD)
    a.configure_auto_refill(6 * USD, 30 * USD, None, max_failures=2)  # a charge is still pending: it stays so
    made = replayed(changes(a))
    assert made.pending == second and a.refill_pending == second
    assert made == msgspec.structs.replace(a.refill_state, last_failure="declined")
    assert made.settings == AutoRefill(6 * USD, 30 * USD, "pm_1", 2) and made.failures == 0 and made.armed

    a.auto_refill_failed(second, "declined again")
    a.trigger_auto_refill(uuid.uuid4(), USD)
    a.auto_refill_failed(a.refill_pending, "declined a third time")  # two in a row: off
    off = replayed(changes(a), made)
    assert a.auto_refill is None and not off.enabled and off.failures == 2 and off.pending is None
    assert off.disabled_reason.startswith("turned off after 2 failed charges in a row")
    assert off.settings == AutoRefill(6 * USD, 30 * USD, "pm_1", 2)  # kept while off, for the read model
    assert a.refill_state == msgspec.structs.replace(off, settings=None, last_failure=None, disabled_reason=None)


def test_a_card_saved_is_what_the_settings_charge_and_is_kept_while_off():
    card = SavedCard("pm_2", "mastercard", "4444", 3, 2031, NOW)
    change = RefillChange(payment_method="pm_2", card=card)
    on = AutoRefillState(settings=AutoRefill(5, 20, "pm_1", 3), enabled=True)
    assert on.changed(change).settings == AutoRefill(5, 20, "pm_2", 3) and on.changed(change).card == card
    assert AutoRefillState().changed(change) == AutoRefillState(card=card)  # no settings yet: only the card


def test_a_failure_counts_one_more_and_a_success_starts_the_count_again():
    state = AutoRefillState(failures=2, pending=uuid.uuid4(), armed=False)
    failed = state.changed(RefillChange(pending=None, armed=True, failures_added=1, last_failure="no"))
    assert (failed.failures, failed.pending, failed.armed, failed.last_failure) == (3, None, True, "no")
    assert failed.changed(RefillChange(pending=None, failures=0)).failures == 0


def test_every_auto_refill_event_says_its_change():
    assert set(AUTO_REFILL_EVENTS) == {e for e in events_of(Account) if issubclass(e, ChangesAutoRefill)}
    assert {e.__name__ for e in AUTO_REFILL_EVENTS} == {
        n for n in dir(Account) if n.startswith("AutoRefill") and isinstance(getattr(Account, n), type)
    }
