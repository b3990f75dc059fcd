"""Auto-refill set up on the Billing page in a real Chromium against `mesh up`, localstripe and a fake upstream:
a card saved while paying a top-up (no Stripe id typed anywhere), shown by brand and last four digits, charged
off-session when the balance falls below the threshold; refusals beside the form with the input kept.
Screenshots land in test-artifacts/dashboard/ as autorefill-*.png."""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from decimal import Decimal

import httpx
import openai

from tests.e2e.test_dashboard import (
    MODEL,
    browser,  # noqa: F401 (a fixture: this module's own browser)
    dashboard_mesh,  # noqa: F401 (a fixture: this module's own Mesh)
    shot,
    signed_up,
)

SAVED = "Visa •••• 4242, expires 12/30"


@contextmanager
def account(browser, mesh, **context_options):
    """A new account signed up through the form, on /billing: (page, API client with its session token)."""
    with signed_up(browser, mesh, **context_options) as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
        with httpx.Client(base_url=mesh.url, headers={"authorization": f"Bearer {token}"}, timeout=30) as api:
            page.goto("/billing")
            yield page, api
        assert errors == []


def reload_until(page, ready, tries: int = 100) -> None:
    """A page is drawn by the server: loaded again until the read models have what `ready` looks for."""
    for _ in range(tries):
        if ready():
            return
        time.sleep(0.2)
        page.reload()
    assert ready(), "the page never showed it"


def wait_until(check, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def balance(api: httpx.Client) -> Decimal:
    return Decimal(api.get("/api/billing/balance").json()["balance_usd"])


def pay_by_card(page, amount: str, number: str, save: bool) -> None:
    """A card top-up through localstripe's stripe.js, from the Billing page to Stripe's answer."""
    from playwright.sync_api import expect

    page.get_by_label("Amount").fill(amount)
    page.get_by_label("Pay by").select_option("stripe")
    page.get_by_role("button", name="Top up").click()
    card = page.locator(".card-element")
    for field, value in (("number", number), ("exp_month", "12"), ("exp_year", "30"), ("cvc", "123")):
        card.get_by_placeholder(field).fill(value)
    card.get_by_placeholder("postal_code").fill("42424")
    if save:
        page.get_by_label("Save this card for auto-refill").check()
    shot(page, "autorefill-01-pay-and-save")
    page.set_viewport_size({"width": 375, "height": 800})
    shot(page, "autorefill-01-pay-and-save-375")
    page.set_viewport_size({"width": 1280, "height": 900})
    page.get_by_role("button", name=f"Pay ${Decimal(amount):.2f}").click()
    expect(page.get_by_text("Payment received")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/billing$"))


def test_a_card_saved_while_paying_is_charged_when_the_balance_falls_below_the_threshold(browser, dashboard_mesh):
    from playwright.sync_api import expect

    mesh = dashboard_mesh
    with account(browser, mesh) as (page, api):
        expect(page.locator("#saved-card")).to_contain_text("No card is saved for auto-refill yet")
        expect(page.locator("input[name=payment_method_id]")).to_have_count(0)  # no Stripe id to type, ever
        shot(page, "autorefill-00-no-card")

        pay_by_card(page, "10", "4242424242424242", save=True)
        expect(page.locator(".headline")).to_have_text("$10.00")
        # the card is saved once Stripe's payment_intent.succeeded webhook arrives
        reload_until(page, lambda: SAVED in page.locator("#saved-card").inner_text())
        assert "4242424242424242" not in page.content()

        # On, with the saved card: the threshold and the charge in USD, nothing else.
        page.get_by_label("Refill automatically").check()
        page.get_by_label("Threshold").fill("9.99")
        page.get_by_label("Charge").fill("10.00")
        page.get_by_role("button", name="Save auto-refill").click()
        expect(page).to_have_url(re.compile(r"/billing#auto-refill$"))
        expect(page.locator("#refill-state")).to_have_text(
            f"On: when the balance falls below $9.99, $10.00 is charged to {SAVED}."
        )
        expect(page.get_by_label("Threshold")).to_have_value("9.99")
        expect(page.get_by_label("Charge")).to_have_value("10.00")
        expect(page.get_by_label("Refill automatically")).to_be_checked()
        shot(page, "autorefill-02-on")
        page.set_viewport_size({"width": 375, "height": 800})
        page.locator("#auto-refill").scroll_into_view_if_needed()
        shot(page, "autorefill-02-on-375")
        page.set_viewport_size({"width": 1280, "height": 900})
        settings = api.get("/api/billing/auto-refill").json()
        assert settings["enabled"] is True and settings["payment_method_id"].startswith("card_")
        assert (settings["threshold_usd"], settings["amount_usd"]) == ("9.990000", "10.000000")
        assert settings["card"] == {"brand": "Visa", "last4": "4242", "exp_month": 12, "exp_year": 2030}

        # Spend below the threshold: one request (a cent and some) takes the balance from $10.00 below $9.99.
        created = api.post("/api/keys", json={"label": "refill-key", "default_model": MODEL})
        assert created.status_code == 201, created.text
        client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=created.json()["key"], max_retries=0)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "spend"}], max_tokens=100)
        wait_until(lambda: api.get("/api/billing/balance").json()["spend_usd"] != "0.000000")
        wait_until(lambda: balance(api) > 10)  # the refill charged the saved card and its money arrived
        time.sleep(1.5)  # time enough for a wrong second charge to show
        spent = Decimal(api.get("/api/billing/balance").json()["spend_usd"])
        assert Decimal("0.01") < spent < Decimal("0.02")
        assert balance(api) == Decimal(10) + Decimal(10) - spent  # the top-up and one refill of $10
        cards = [t for t in api.get("/api/billing/topups").json() if t["provider"] == "stripe"]
        assert sorted((t["status"], t["received_usd"]) for t in cards) == [("succeeded", "10.000000")] * 2
        refilled = api.get("/api/billing/auto-refill").json()
        assert refilled["enabled"] is True and refilled["failures"] == 0 and refilled["refilling"] is False

        page.reload()
        expect(page.locator(".headline")).to_have_text(f"${Decimal(20) - spent:.2f}")
        expect(page.get_by_role("cell", name="succeeded")).to_have_count(2)
        shot(page, "autorefill-03-refilled")

        # The JSON API charges the same saved card when it is given no payment_method_id.
        changed = api.put("/api/billing/auto-refill", json={"threshold_usd": "1", "amount_usd": "5"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["payment_method_id"] == settings["payment_method_id"]
        assert (changed.json()["threshold_usd"], changed.json()["card"]["last4"]) == ("1.000000", "4242")


def test_a_refused_auto_refill_is_said_beside_the_form_with_the_input_kept(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with account(browser, dashboard_mesh, viewport={"width": 375, "height": 800}) as (page, api):
        expect(page.locator("#saved-card")).to_contain_text("top up by card above and tick")
        page.get_by_label("Refill automatically").check()
        page.get_by_label("Threshold").fill("5")
        page.get_by_label("Charge").fill("ten")
        page.get_by_role("button", name="Save auto-refill").click()
        alert = page.locator("#refill-error")
        expect(alert).to_have_attribute("role", "alert")
        expect(alert).to_have_text("Charge must be a decimal number such as \"12.50\", got 'ten'")
        expect(page.get_by_label("Charge")).to_have_value("ten")
        expect(page.get_by_label("Charge")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("Charge")).to_be_focused()  # the field to fix, in view, for keyboard users too
        expect(page.get_by_label("Threshold")).to_have_value("5")
        expect(page.get_by_label("Refill automatically")).to_be_checked()
        expect(page.get_by_role("navigation", name="Sections")).to_be_visible()  # the Billing page, not a dead end
        page.locator("#auto-refill").scroll_into_view_if_needed()
        shot(page, "autorefill-04-refused-375")

        page.get_by_label("Charge").fill("1000")
        page.get_by_label("Threshold").fill("0.001")
        page.get_by_role("button", name="Save auto-refill").click()
        expect(alert).to_have_text("Threshold allows at most 2 decimal places, got '0.001'")
        expect(page.get_by_label("Threshold")).to_have_attribute("aria-invalid", "true")
        page.get_by_label("Threshold").fill("5")
        page.get_by_role("button", name="Save auto-refill").click()
        expect(alert).to_have_text("Charge must be between 5.000000 and 500.000000")
        expect(page.get_by_label("Charge")).to_have_value("1000")

        page.get_by_label("Charge").fill("10")
        page.get_by_role("button", name="Save auto-refill").click()  # right amounts, but no card saved
        expect(alert).to_contain_text("no card is saved for auto-refill")
        expect(page.get_by_label("Charge")).to_have_value("10")
        refused = api.put("/api/billing/auto-refill", json={"threshold_usd": "5", "amount_usd": "10"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (409, "no_saved_card")
        assert api.get("/api/billing/auto-refill").json() == {
            "enabled": False,
            "threshold_usd": None,
            "amount_usd": None,
            "payment_method_id": None,
            "refilling": False,
            "failures": 0,
            "last_failure": None,
            "disabled_reason": None,
            "card": None,
        }
        page.set_viewport_size({"width": 1280, "height": 900})
        shot(page, "autorefill-04-refused")
