"""The billing read model's auto-refill row, on a real nats-server and PostgreSQL: after every step of a refill's
life it says what the Account aggregate holds (both apply each event's change from domain/autorefill.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

from commands.app import MeshApplication
from commands.autorefill import AutoRefillCommands
from domain.autorefill import SavedCard
from projections import billing
from tests.integration.test_logs import BILLING, accounts, catch_up, env  # noqa: F401

USD = 10**12


def card(payment_method: str, last4: str) -> SavedCard:
    return SavedCard(payment_method, "visa", last4, 12, 2034, datetime.now(timezone.utc))


async def test_the_auto_refill_row_says_what_the_account_holds_after_every_step(env, nats_url, stream_name):
    nc, pool, app, publisher = env
    (account,) = await accounts(app, 1)
    refills = AutoRefillCommands(app)
    started: dict[str, uuid.UUID | None] = {}
    steps = [
        lambda: refills.save_card(account, card("pm_first", "4242")),
        lambda: refills.configure(account, 5 * USD, 20 * USD, 2),
        lambda: started.update(first=refills.trigger(account, USD)),
        lambda: refills.failed(account, started["first"], "card declined"),
        lambda: started.update(second=refills.trigger(account, USD)),
        lambda: refills.configure(account, 6 * USD, 30 * USD, 3),  # while a charge is pending: it stays pending
        lambda: refills.save_card(account, card("pm_second", "4444")),
        lambda: refills.succeeded(account, started["second"], "pi_second", 30 * USD),
        lambda: refills.rearm(account, 50 * USD),
        lambda: refills.disable(account, "turned off by the account"),
        lambda: refills.save_card(account, card("pm_third", "0005")),  # while off
    ]
    seen = []
    for step in steps:
        await asyncio.to_thread(step)
        await catch_up(nc, pool, publisher.stream, BILLING)
        async with pool.connection() as conn:
            row = await billing.auto_refill_of(conn, account)
        state = app.account(account).refill_state
        assert row is not None
        assert (row.enabled, row.armed, row.pending, row.failures) == (
            state.enabled,
            state.armed,
            state.pending,
            state.failures,
        )
        assert state.card is not None
        assert (row.card_brand, row.card_last4, row.card_exp_month, row.card_exp_year) == (
            state.card.brand,
            state.card.last4,
            state.card.exp_month,
            state.card.exp_year,
        )
        if state.settings is not None:
            assert (row.threshold, row.amount, row.payment_method) == (
                state.settings.threshold,
                state.settings.amount,
                state.settings.payment_method,
            )
        seen.append((row.enabled, row.pending is not None, row.failures, row.payment_method))
    assert seen == [
        (False, False, 0, "pm_first"),
        (True, False, 0, "pm_first"),
        (True, True, 0, "pm_first"),
        (True, False, 1, "pm_first"),
        (True, True, 1, "pm_first"),
        (True, True, 0, "pm_first"),
        (True, True, 0, "pm_second"),
        (True, False, 0, "pm_second"),
        (True, False, 0, "pm_second"),
        (False, False, 0, "pm_second"),
        (False, False, 0, "pm_third"),  # the read model keeps the settings while off, with the card they charge
    ]
    assert row.disabled_reason == "turned off by the account" and row.last_failure == "card declined"

    # another process, reading the account's events from the stream, makes the same state of them
    replica = await asyncio.to_thread(MeshApplication, nats_url, stream_name)
    try:
        assert (await asyncio.to_thread(replica.account, account)).refill_state == state
    finally:
        await asyncio.to_thread(replica.close)
