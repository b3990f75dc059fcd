"""The Billing page's usage and credits in a real Chromium against `mesh up`, localstripe and a fake upstream: the
chart's series (spend, requests, tokens, errors, latency) after known requests on two keys, usage by key, the CSV
exports, and the credit history. Screenshots land in test-artifacts/dashboard/ as billing-*.png."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import math
import re
import time
import uuid
from contextlib import contextmanager
from decimal import Decimal

import httpx
import openai
import stripe

from tests import http_calls
from tests.e2e.test_dashboard import (
    ARTIFACTS,
    FREE_MODEL,
    MODEL,
    PASSWORD,
    TIMEOUT_MS,
    WEBHOOK_SECRET,
    browser,  # noqa: F401 (a fixture: this module's own browser)
    dashboard_mesh,  # noqa: F401 (a fixture: this module's own Mesh)
    shot,
)

PICO = 10**12


@contextmanager
def account(browser, mesh, **context_options):
    """A new account (signed up through the API, for its id) logged in through the form: (page, id, api client)."""
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    signed_up = http_calls.post(mesh.url + "/api/signup", json={"email": email, "password": PASSWORD}, timeout=30)
    assert signed_up.status_code == 201, signed_up.text
    context = browser.new_context(base_url=mesh.url, viewport={"width": 1280, "height": 900}, **context_options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto("/login")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r"/keys$"))
        token = next(c["value"] for c in context.cookies() if c["name"] == "mesh_session")
        with httpx.Client(base_url=mesh.url, headers={"authorization": f"Bearer {token}"}, timeout=30) as api:
            yield page, signed_up.json()["account_id"], api
        assert errors == []
    finally:
        context.close()


def grant(mesh, account_id: str, usd: str, reason: str) -> None:
    granted = http_calls.post(
        f"{mesh.url}/admin/accounts/{account_id}/credits",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"amount_usd": usd, "reason": reason},
        timeout=30,
    )
    assert granted.status_code == 201, granted.text


def reload_until(page, shown, expected, tries: int = 100) -> None:
    """A page is drawn by the server: loaded again until what it shows (`shown()`) is what is expected (the read
    models have caught up)."""
    for _ in range(tries):
        if shown() == expected:
            return
        time.sleep(0.2)
        page.reload()
    assert shown() == expected


def bars(page) -> dict[tuple[str, str], int]:
    """The chart's bar segments: (bucket, series) -> value, read from their data attributes."""
    found: dict[tuple[str, str], int] = {}
    for rect in page.locator("#usage-chart rect[data-value]").all():
        attrs = rect.evaluate("r => [r.dataset.bucket, r.dataset.series, r.dataset.value]")
        found[(attrs[0], attrs[1])] = found.get((attrs[0], attrs[1]), 0) + int(attrs[2])
    return found


def per_series(values: dict[tuple[str, str], int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for (_, series), value in values.items():
        totals[series] = totals.get(series, 0) + value
    return totals


def signed(event: dict) -> tuple[bytes, str]:
    """A Stripe event as Stripe signs it for this Mesh's webhook."""
    payload, now = json.dumps(event).encode(), int(time.time())
    signature = hmac.new(WEBHOOK_SECRET.encode(), b"%d." % now + payload, hashlib.sha256).hexdigest()
    return payload, f"t={now},v1={signature}"


def percentile_disc(values: list[int], fraction: str) -> int:
    """PostgreSQL's percentile_disc: the first value whose position in the order reaches the fraction."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(Decimal(fraction) * len(ordered))) - 1]


def table(page, selector: str) -> list[list[str]]:
    return [
        [cell.inner_text().strip() for cell in row.locator("td").all()]
        for row in page.locator(f"{selector} tbody tr").all()
    ]


def download(page, link_name: str) -> list[list[str]]:
    with page.expect_download() as started:
        page.get_by_role("link", name=link_name).click()
    with open(started.value.path(), newline="") as f:
        return list(csv.reader(f))


def test_the_usage_series_keys_and_exports_show_the_numbers_of_known_requests(browser, dashboard_mesh, fake_openai):
    from playwright.sync_api import expect

    mesh = dashboard_mesh
    with account(browser, mesh) as (page, account_id, api):
        grant(mesh, account_id, "50", "usage test")
        keys = {}
        for label in ("usage-a", "usage-b"):
            created = api.post("/api/keys", json={"label": label})
            assert created.status_code == 201, created.text
            keys[label] = created.json()
        expected = {label: {"requests": 0, "tokens": 0, "errors": 0} for label in keys}

        def call(label: str, model: str, text: str, fail: bool = False) -> None:
            client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=keys[label]["key"], max_retries=0)
            fake_openai.fail_with = (500, "the upstream says no") if fail else None
            try:
                answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
                expected[label]["tokens"] += answer.usage.prompt_tokens + answer.usage.completion_tokens
            except openai.APIStatusError:
                assert fail
                expected[label]["errors"] += 1
            finally:
                fake_openai.fail_with = None
            expected[label]["requests"] += 1

        for text in ("one", "one two", "one two three"):
            call("usage-a", MODEL, text)
        call("usage-b", MODEL, "four five six seven")
        call("usage-b", MODEL, "eight")
        call("usage-b", FREE_MODEL, "free words here")
        call("usage-b", MODEL, "this one fails", fail=True)
        assert expected["usage-a"]["tokens"] > 0 and expected["usage-b"]["errors"] == 1

        # requests per day by key: each key's known count, once both read models have every call
        page.goto("/billing?series=requests&by=key")
        reload_until(page, lambda: per_series(bars(page)), {k: v["requests"] for k, v in expected.items()})
        chart = page.locator("#usage-chart svg")
        expect(chart).to_have_attribute("aria-label", re.compile(r"^Requests per day"))
        shot(page, "billing-01-requests-by-key")
        page.get_by_role("navigation", name="Series").get_by_role("link", name="tokens").click()
        expect(page).to_have_url(re.compile(r"series=tokens"))
        assert per_series(bars(page)) == {k: v["tokens"] for k, v in expected.items()}
        page.get_by_role("navigation", name="Series").get_by_role("link", name="errors").click()
        assert per_series(bars(page)) == {"usage-b": 1}

        # links keep the range, the series and the grouping
        page.get_by_role("navigation", name="Range").get_by_role("link", name="7d").click()
        expect(page).to_have_url(re.compile(r"range=7d"))
        assert re.search(r"series=errors", page.url) and re.search(r"by=key", page.url)
        expect(page.get_by_role("navigation", name="Stack by").get_by_role("link", name="by key")).to_have_attribute(
            "aria-current", "true"
        )
        page.get_by_role("navigation", name="Stack by").get_by_role("link", name="by model").click()
        assert "range=7d" in page.url and "series=errors" in page.url and "by=model" in page.url
        assert per_series(bars(page)) == {MODEL: 1}

        # spend by key: each key's exact spend, as the JSON API says it
        page.goto("/billing?series=spend&by=key")
        by_key = api.get("/api/billing/spend", params={"group_by": "key"}).json()["data"]
        spend = {row["group"]["key"]: row["spend_usd"] for row in by_key}
        label_of = {keys[label]["id"]: label for label in keys}
        assert per_series(bars(page)) == {
            label_of[k]: int(Decimal(usd) * PICO) for k, usd in spend.items() if Decimal(usd)
        }

        # usage by key: each key linked to its page, its requests and tokens, its spend exact on hover
        rows = page.locator("#by-key tbody tr")
        expect(rows).to_have_count(2)
        for label, key in keys.items():
            row = page.locator(f'#by-key tbody tr[data-key-id="{key["id"]}"]')
            expect(row.get_by_role("link", name=label)).to_have_attribute("href", f"/keys/{key['id']}")
            cells = row.locator("td")
            expect(cells.nth(1)).to_have_text(str(expected[label]["requests"]))
            expect(cells.nth(2)).to_have_text(str(expected[label]["errors"]))
            shown_tokens = int(cells.nth(3).inner_text().replace(",", "")) + int(
                cells.nth(4).inner_text().replace(",", "")
            )
            assert shown_tokens == expected[label]["tokens"]
            expect(cells.nth(5)).to_have_attribute("title", "$" + spend[key["id"]])
            expect(cells.nth(5)).to_have_text(re.compile(r"^<?\$\d+\.\d\d$"))  # to the cent

        # the exports: the tables, money exact as the API writes it
        exported = download(page, "Download CSV of spend by key")
        assert exported[0] == [
            "key_id",
            "label",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
            "spend_usd",
        ]
        shown = table(page, "#by-key")
        assert [r[1:6] for r in exported[1:]] == [[c.replace(",", "") for c in r[:5]] for r in shown]
        assert {r[0]: r[6] for r in exported[1:]} == spend
        exported = download(page, "Download CSV of spend by model")
        by_model = api.get("/api/billing/spend", params={"group_by": "provider,model"}).json()["data"]
        assert exported[0][:2] == ["provider", "model"]
        assert [r[:6] for r in exported[1:]] == [[c.replace(",", "") for c in r[:6]] for r in table(page, "#by-model")]
        assert {(r[0], r[1]): r[6] for r in exported[1:]} == {
            (row["group"]["provider"], row["group"]["model"]): row["spend_usd"] for row in by_model
        }
        cookie = {"mesh_session": api.headers["authorization"].removeprefix("Bearer ")}
        raw = http_calls.get(mesh.url + "/billing/spend.csv", params={"table": "key", "range": "30d"}, cookies=cookie)
        assert raw.headers["content-type"].startswith("text/csv") and "no-store" in raw.headers["cache-control"]
        assert re.fullmatch(
            r'attachment; filename="mesh-spend-by-key-[0-9-]+-to-[0-9-]+\.csv"', raw.headers["content-disposition"]
        )
        wrong = http_calls.get(mesh.url + "/billing/spend.csv", params={"table": "nope"}, cookies=cookie)
        assert wrong.status_code == 400 and "table is model or key" in wrong.text

        # latency: p50 and p95 per day of every logged request, as percentile_disc finds them in the logs
        page.get_by_role("navigation", name="Series").get_by_role("link", name="latency").click()
        logged = api.get("/api/logs", params={"limit": 500}).json()["data"]
        assert len(logged) == sum(v["requests"] for v in expected.values())
        days: dict[str, list[int]] = {}
        for entry in logged:
            days.setdefault(entry["time"][:10], []).append(round(Decimal(str(entry["latency_ms"]["total"])) * 1000))
        groups = page.locator("#usage-chart g.latency")
        expect(groups).to_have_count(len(days))
        for day, latencies in days.items():
            group = page.locator(f'#usage-chart g.latency[data-bucket="{day}"]')
            p50, p95 = int(group.get_attribute("data-p50-us")), int(group.get_attribute("data-p95-us"))
            assert int(group.get_attribute("data-requests")) == len(latencies)
            assert (p50, p95) == (percentile_disc(latencies, "0.5"), percentile_disc(latencies, "0.95"))
            assert 0 < p50 <= p95
        expect(page.locator("#usage-chart figcaption")).to_contain_text("from its arrival at Mesh")
        expect(page.get_by_role("navigation", name="Stack by")).to_have_count(0)  # latency is not stacked
        shot(page, "billing-02-latency")

        # at 375 px: nothing wider than the screen
        page.set_viewport_size({"width": 375, "height": 800})
        for series in ("requests", "latency"):
            page.goto(f"/billing?series={series}&by=key")
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, series
        shot(page, "billing-03-latency-375px")


def test_the_credit_history_lists_grants_top_ups_refunds_and_auto_refills_newest_first(
    browser, dashboard_mesh, localstripe
):
    from playwright.sync_api import expect

    mesh = dashboard_mesh
    stripe_client = stripe.StripeClient("sk_test_mesh", base_addresses={"api": localstripe})
    with account(browser, mesh) as (page, account_id, api):
        page.goto("/billing")
        expect(page.locator("#credits tbody")).to_contain_text("No credits yet")
        grant(mesh, account_id, "1.25", "goodwill for the outage of 3 May")

        # a card top-up through localstripe's stripe.js
        page.get_by_label("Amount").fill("20.00")
        page.get_by_label("Pay by").select_option("stripe")
        page.get_by_role("button", name="Top up").click()
        card = page.locator(".card-element")
        for field, value in (
            ("number", "4242424242424242"),
            ("exp_month", "12"),
            ("exp_year", "30"),
            ("cvc", "123"),
            ("postal_code", "42424"),
        ):
            card.get_by_placeholder(field).fill(value)
        page.get_by_role("button", name="Pay $20.00").click()
        expect(page).to_have_url(re.compile(r"/billing$"))
        expect(page.locator(".headline")).to_have_text("$21.25")
        (topup,) = api.get("/api/billing/topups").json()

        # $5 of it refunded (Stripe's webhook), then an auto-refill charge of $10 (the balance is below $100)
        charge = {"id": "ch_" + uuid.uuid4().hex[:12], "object": "charge", "payment_intent": topup["reference"]}
        refund = {
            "id": "evt_" + uuid.uuid4().hex[:12],
            "type": "charge.refunded",
            "data": {"object": {**charge, "amount": 2000, "amount_refunded": 500}},
        }
        payload, signature = signed(refund)
        delivered = http_calls.post(
            mesh.url + "/api/billing/stripe/webhook",
            content=payload,
            headers={"stripe-signature": signature, "content-type": "application/json"},
        )
        assert delivered.status_code == 200, delivered.text
        expect(page.locator(".headline")).to_have_text("$16.25")
        method = stripe_client.v1.payment_methods.create(
            params={
                "type": "card",
                "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
            }
        )
        refill = api.put(
            "/api/billing/auto-refill",
            json={"threshold_usd": "100", "amount_usd": "10", "payment_method_id": method.id},
        )
        assert refill.status_code == 200, refill.text
        expect(page.locator(".headline")).to_have_text("$26.25", timeout=TIMEOUT_MS)

        rows = page.locator("#credits tbody tr")
        reload_until(page, rows.count, 4)
        kinds = [r.get_attribute("data-kind") for r in rows.all()]
        assert kinds == ["auto_refill", "refund", "card", "operator"]
        assert [r[1:3] for r in table(page, "#credits")] == [
            ["auto-refill charge", "$10.00"],
            ["refund", "-$5.00"],
            ["card top-up", "$20.00"],
            ["operator grant", "$1.25"],
        ]
        expect(rows.nth(3)).to_contain_text("goodwill for the outage of 3 May")
        expect(rows.nth(2)).to_contain_text(topup["reference"])
        expect(rows.nth(3).locator("td").nth(2)).to_have_attribute("title", "$1.250000")
        shot(page, "billing-04-credit-history")
        page.set_viewport_size({"width": 375, "height": 800})
        page.reload()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        page.locator("#credits-h").scroll_into_view_if_needed()
        shot(page, "billing-05-credit-history-375px")


def test_the_page_without_usage_keeps_its_empty_states(browser, dashboard_mesh):
    """No usage: no chart for any series, no tables, a word for each; the CSV is a header line."""
    from playwright.sync_api import expect

    with account(browser, dashboard_mesh) as (page, _, api):
        for series in ("spend", "requests", "latency"):
            page.goto(f"/billing?series={series}")
            expect(page.locator("#no-spend")).to_contain_text("No spend between")
            expect(page.locator("svg.chart")).to_have_count(0)
            expect(page.locator("#by-key")).to_have_count(0)
        cookie = {"mesh_session": api.headers["authorization"].removeprefix("Bearer ")}
        answer = http_calls.get(dashboard_mesh.url + "/billing/spend.csv", params={"table": "model"}, cookies=cookie)
        assert answer.status_code == 200
        assert list(csv.reader(io.StringIO(answer.text))) == [
            ["provider", "model", "requests", "errors", "prompt_tokens", "completion_tokens", "spend_usd"]
        ]
    assert ARTIFACTS.exists()
