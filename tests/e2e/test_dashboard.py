"""The dashboard in a real Chromium (Debian's, driven by Playwright) against `mesh up`, localstripe and a fake
upstream: every section, the way a user goes through it. Screenshots land in test-artifacts/dashboard/."""

from __future__ import annotations

import html
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import MeshProcess, paid_by_localstripe, send_webhooks

pytestmark = pytest.mark.long  # scheduled first (tests/conftest.py)

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard"
WEBHOOK_SECRET = "whsec_test_" + uuid.uuid4().hex
PASSWORD = "correct horse battery"
MODEL, FREE_MODEL = "acme/gpt-test", "acme/free-test"
TIMEOUT_MS = 15_000


# Chromium's headless shell first: the same Blink and V8 without the desktop browser's compositor and GPU process
# (what Playwright itself runs for headless): a dashboard test module takes about a third less CPU. Else the browser.
CHROMIUM_COMMANDS = ("chromium-headless-shell", "chromium", "chromium-browser")


def chromium_path() -> str | None:
    return next(filter(None, map(shutil.which, CHROMIUM_COMMANDS)), None)


@contextmanager
def chromium():
    """Debian's Chromium under Playwright (a skip without it, a failure in CI). While it is open, Playwright's sync
    API keeps an event loop running in this thread: asyncio.run() fails until it closes."""
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "chromium is not installed; .ci/run installs it with apt (the dashboard tests never skip in CI)"
            )
        pytest.skip("chromium is not installed (apt-get install chromium-headless-shell)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def dashboard_mesh(tmp_path_factory, localstripe, fake_openai):
    config = tmp_path_factory.mktemp("dashboard-config") / "mesh.toml"
    config.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{fake_openai.url}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "{MODEL}"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 4096

[[models]]
id = "{FREE_MODEL}"
provider = "acme"
upstream = "gpt-free"
prompt_usd_per_1k = "0"
completion_usd_per_1k = "0"
""")
    mesh = MeshProcess(
        tmp_path_factory.mktemp("dashboard") / "data",
        config,
        paid_by_localstripe(
            localstripe,
            WEBHOOK_SECRET,
            MESH_STRIPE_PUBLISHABLE_KEY="pk_test_mesh",
            MESH_STRIPE_JS_URL=f"{localstripe}/js.stripe.com/v3/",
            MESH_REFUSALS_FLUSH_SECONDS="1",  # refused requests show on the pages a second later
        ),
    )
    send_webhooks(localstripe, mesh, WEBHOOK_SECRET)
    mesh.start()
    yield mesh
    mesh.stop()


@pytest.fixture(scope="module")
def page(browser, dashboard_mesh):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=dashboard_mesh.url)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.js_errors = errors
    yield page
    context.close()


@contextmanager
def signed_up(browser, mesh, **context_options):
    """A fresh browser context with a new account signed up through the form; yields its page on /keys."""
    context = browser.new_context(base_url=mesh.url, **context_options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto("/signup")
        page.get_by_label("Email").fill(f"{uuid.uuid4().hex[:8]}@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign up").click()
        page.wait_for_url(re.compile(r"/keys$"))
        yield page
    finally:
        context.close()


@contextmanager
def signed_in(browser, mesh, token: str, **context_options):
    """A fresh browser context holding the session of an account made over the API (its management token);
    yields a blank page."""
    context = browser.new_context(base_url=mesh.url, **context_options)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_cookies([{"name": "mesh_session", "value": token, "url": mesh.url}])
    try:
        yield context.new_page()
    finally:
        context.close()


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def balance_pico(page) -> int:
    return int(page.locator("[data-balance-pico]").get_attribute("data-balance-pico"))


def test_a_user_goes_through_every_section(page, dashboard_mesh):
    from playwright.sync_api import expect

    mesh = dashboard_mesh
    email = f"{uuid.uuid4().hex[:8]}@example.com"

    # A visitor is sent to /login; signs up from there and lands on the dashboard.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    shot(page, "01-login")
    page.get_by_role("link", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/signup$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(re.compile(r"/keys$"))
    for name in ("API Keys", "Billing", "Logs", "Models", "Templates"):
        expect(
            page.get_by_role("navigation", name="Sections").get_by_role("link", name=name, exact=True)
        ).to_be_visible()
    session = next(c for c in page.context.cookies() if c["name"] == "mesh_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"

    # API Keys: create one, read its secret once.
    page.get_by_label("Label").fill("ci-key")
    page.get_by_label("Default model").select_option(MODEL)
    page.get_by_role("button", name="Create key").click()
    expect(page.get_by_text("Copy it now; it will not be shown again.")).to_be_visible()
    secret = page.locator("#secret").inner_text().strip()
    assert secret.startswith("mk-")
    expect(page.get_by_role("button", name="Copy").first).to_be_visible()
    shot(page, "02-keys-created")
    page.goto("/keys")
    assert secret not in page.content()  # never shown again
    expect(page.get_by_role("cell", name="ci-key")).to_be_visible()

    # Billing: top up $20 by card through localstripe's stripe.js; the balance rises.
    page.get_by_role("link", name="Billing", exact=True).click()
    expect(page.locator(".headline")).to_have_text("$0.00")
    page.get_by_label("Amount").fill("20.00")
    page.get_by_label("Pay by").select_option("stripe")
    page.get_by_role("button", name="Top up").click()
    card = page.locator(".card-element")
    card.get_by_placeholder("number").fill("4242424242424242")
    card.get_by_placeholder("exp_month").fill("12")
    card.get_by_placeholder("exp_year").fill("30")
    card.get_by_placeholder("cvc").fill("123")
    card.get_by_placeholder("postal_code").fill("42424")
    shot(page, "03-pay-by-card")
    page.get_by_role("button", name="Pay $20.00").click()
    expect(page.get_by_text("Payment received")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/billing$"))
    expect(page.locator(".headline")).to_have_text("$20.00")  # the live balance, moved by the account's events
    page.reload()
    expect(page.get_by_role("cell", name="succeeded")).to_be_visible()

    # A call with the key (the openai SDK) shows in Logs, and the balance drops.
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=secret, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hello dashboard"}]
    )
    answer = raw.parse()
    trace_id = raw.headers["x-mesh-trace-id"]
    assert answer.usage.completion_tokens > 0
    # the balance reloads on the usage event, once the billing read model shows it: more than expect's default 5 s
    # under load
    expect(page.locator(".headline")).not_to_have_text("$20.00", timeout=TIMEOUT_MS)
    assert 0 < balance_pico(page) < 20 * 10**12
    page.reload()  # the chart and the table are drawn with the page
    expect(page.locator("svg.chart rect").first).to_be_attached()
    expect(page.get_by_role("cell", name=MODEL)).to_be_visible()
    shot(page, "04-billing")
    page.get_by_role("link", name=MODEL, exact=True).click()  # one click from a number to the calls behind it
    expect(page).to_have_url(re.compile(r"/logs\?model="))
    expect(page.get_by_role("link", name="…" + trace_id[-12:])).to_be_visible()

    page.get_by_role("link", name="Logs", exact=True).click()
    row_link = page.get_by_role("link", name="…" + trace_id[-12:])
    expect(row_link).to_be_visible()
    page.get_by_label("Status").select_option("error")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=error"))
    expect(page.get_by_text("No requests match")).to_be_visible()
    page.get_by_label("Status").select_option("success")
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=success"))
    shot(page, "05-logs")
    page.get_by_role("link", name="…" + trace_id[-12:]).click()
    expect(page.locator("#trace")).to_have_text(trace_id)
    expect(page.get_by_text("first token")).to_be_visible()
    cost = Decimal(
        http_calls.get(
            f"{mesh.url}/api/logs/{trace_id}", headers={"authorization": f"Bearer {session['value']}"}
        ).json()["cost_usd"]
    )
    expect(page.get_by_text(f"${cost:.6f}")).to_be_visible()  # the same number as the API
    shot(page, "06-log-entry")

    # Models: filter to the free ones.
    page.get_by_role("link", name="Models", exact=True).click()
    expect(page.get_by_role("cell", name=MODEL, exact=True)).to_be_visible()
    page.get_by_label("Free only").check()
    expect(page).to_have_url(re.compile(r"free=true"))
    expect(page.get_by_role("cell", name=MODEL, exact=True)).to_have_count(0)
    expect(page.get_by_text(FREE_MODEL)).to_be_visible()
    shot(page, "07-models-free")

    # Templates: create, see its variables, test it against a model with the key, edit, see version 2.
    page.get_by_role("link", name="Templates", exact=True).click()
    page.get_by_role("link", name="New template").click()
    page.get_by_label("Name").fill("greeting")
    page.get_by_label("Message 1").fill("You are {{persona}}.")
    page.get_by_label("Message 2").fill("My name is {{ name }}.")
    expect(page.locator("#detected")).to_have_text("persona, name")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_role("button", name="Create template").click()
    expect(page.get_by_role("heading", name=re.compile("greeting"))).to_contain_text("version 1")
    page.get_by_label("persona", exact=True).fill("a pirate")
    page.get_by_label("name", exact=True).fill("Ada")
    page.locator("#test-h + p + form").get_by_label("Model").select_option(MODEL)
    page.get_by_label("API key").fill(secret)
    page.get_by_role("button", name="Test").click()
    expect(page.locator("#answer")).not_to_be_empty()
    expect(page.get_by_text("My name is Ada.")).to_be_visible()
    expect(page.locator("#test-result")).to_contain_text("prompt")
    expect(page.locator("#test-result")).to_contain_text("$0.")
    shot(page, "08-template-tested")
    page.get_by_label("Message 1").fill("You are {{persona}}, brief and kind.")
    page.get_by_role("button", name="Save as version 2").click()
    expect(page.get_by_role("heading", name=re.compile("greeting"))).to_contain_text("version 2")
    page.get_by_role("link", name="diff with 1").click()
    expect(page.locator(".diff .add")).to_contain_text("brief and kind")
    shot(page, "09-template-v2-diff")

    # Back to the key: revoke it behind a confirmation naming it; its history shows.
    page.get_by_role("link", name="API Keys", exact=True).click()
    page.get_by_role("link", name="ci-key").click()
    page.get_by_role("link", name="Revoke").click()
    expect(page.get_by_role("heading")).to_have_text("Revoke key “ci-key”?")
    page.get_by_role("button", name="Revoke “ci-key”").click()
    expect(page.locator("h1 .status")).to_have_text("revoked")
    expect(page.get_by_role("cell", name="key.revoked")).to_be_visible()
    shot(page, "10-key-revoked")
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "again"}])

    # Readable at 375 px: nothing wider than the screen.
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/keys", "/billing", "/logs", "/models"):
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    shot(page, "11-models-375px")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Log out: the session is gone.
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.go_back()  # the page before logging out is not shown again from the browser's cache (no-store)
    expect(page).to_have_url(re.compile(r"/login(\?.*)?$"))
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    page.goto("/keys")
    expect(page).to_have_url(re.compile(r"/login$"))
    assert page.js_errors == []


def test_forms_need_the_csrf_token_and_pages_need_a_session(dashboard_mesh):
    mesh = dashboard_mesh
    r = http_calls.post(
        mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    )
    token = r.json()["management_token"]
    cookies = {"mesh_session": token}
    forged = http_calls.post(mesh.url + "/keys", data={"label": "forged"}, cookies=cookies)
    assert forged.status_code == 403
    keys = http_calls.get(mesh.url + "/api/keys", headers={"authorization": f"Bearer {token}"}).json()["data"]
    assert keys == []  # nothing was created
    assert http_calls.get(mesh.url + "/billing").headers["location"] == "/login"
    assert http_calls.get(mesh.url + "/billing", cookies={"mesh_session": "mm-not-a-token"}).status_code == 302


def test_every_page_of_a_live_session_renews_its_cookie(dashboard_mesh):
    """The server renews a token in use; the browser must not drop its cookie at the first log-in's max-age."""
    mesh = dashboard_mesh
    r = http_calls.post(
        mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    )
    token = r.json()["management_token"]
    shown = http_calls.get(mesh.url + "/billing", cookies={"mesh_session": token})
    assert shown.status_code == 200
    (cookie,) = [c for c in shown.headers.get_list("set-cookie") if c.startswith("mesh_session=")]
    assert cookie.startswith(f"mesh_session={token};") and "HttpOnly" in cookie
    assert re.search(r"Max-Age=(\d+)", cookie).group(1) == str(30 * 86_400)  # MESH_SESSION_DAYS, from now
    refused = http_calls.get(mesh.url + "/billing", cookies={"mesh_session": "mm-not-a-token"})
    assert not [c for c in refused.headers.get_list("set-cookie") if c.startswith("mesh_session=mm-")]


def test_the_logs_page_refuses_the_filters_the_api_refuses_in_its_words(dashboard_mesh):
    """One reading of the log filters (api/log_filter.py): a value /api/logs refuses is refused on the page too,
    not silently dropped (a bad status used to show every request)."""
    mesh = dashboard_mesh
    r = http_calls.post(
        mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    )
    token = r.json()["management_token"]
    for query in ({"status": "failed"}, {"key_id": "k1"}, {"model": "a\x00b"}):
        api = http_calls.get(mesh.url + "/api/logs", params=query, headers={"authorization": f"Bearer {token}"})
        assert api.status_code == 400, api.text
        shown = http_calls.get(mesh.url + "/logs", params=query, cookies={"mesh_session": token})
        assert shown.status_code == 400, (query, shown.status_code)
        alert = re.search(r'<p class="error" role="alert">(.*?)</p>', shown.text, re.S)
        assert alert is not None and html.unescape(alert.group(1)) == api.json()["error"]["message"]
    assert (
        http_calls.get(mesh.url + "/logs", params={"status": "error"}, cookies={"mesh_session": token}).status_code
        == 200
    )


def test_without_javascript_and_by_keyboard_the_forms_still_work(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh, java_script_enabled=False) as page:
        # keyboard only: Tab from the top of the page reaches the sections and the create form; Enter submits
        reached = []
        for _ in range(14):  # the skip link, then the sections
            page.keyboard.press("Tab")
            reached.append(
                page.evaluate(
                    "document.activeElement.getAttribute('name') || document.activeElement.textContent.trim()"
                )
            )
            if reached[-1] == "label":
                break
        assert {"API Keys", "Billing", "Logs", "Models", "Templates", "label"} <= set(reached), reached
        page.keyboard.type("keyboard-key")
        page.keyboard.press("Enter")
        expect(page.get_by_text("Copy it now; it will not be shown again.")).to_be_visible()
        assert page.locator("#secret").inner_text().startswith("mk-")

        # a bank transfer top-up shows the reference to quote
        page.goto("/billing")
        page.get_by_label("Amount").fill("50")
        page.get_by_label("Pay by").select_option("bank_transfer")
        page.get_by_role("button", name="Top up").click()
        expect(page.locator("#reference")).to_have_text(re.compile(r"^MESH-"))
        expect(page.get_by_text("IBAN DE00 1234 5678 9012 3456 78")).to_be_visible()
        expect(page.get_by_role("cell", name="pending")).to_be_visible()
        page.goto("/billing?range=7d&by=provider")
        expect(page.get_by_role("link", name="by provider")).to_have_attribute("aria-current", "true")

        # a bad amount is refused in the API's words, inline
        page.get_by_label("Amount").fill("1")
        page.get_by_role("button", name="Top up").click()
        expect(page.get_by_role("alert")).to_have_text("amount_usd must be between 5.000000 and 500.000000")

        # filters are plain GET forms: the view lives in the URL
        page.goto("/logs")
        page.get_by_label("Status").select_option("error")
        page.get_by_role("button", name="Filter").click()
        expect(page).to_have_url(re.compile(r"status=error"))


def test_a_reload_after_an_action_repeats_nothing(browser, dashboard_mesh):
    """Post/redirect/get: creating a key, rotating it, starting a bank transfer and sending a template's Test
    (without JavaScript) each answer with a redirect; the secret is shown on the page it leads to, once."""
    from playwright.sync_api import expect

    mesh = dashboard_mesh
    for javascript in (True, False):
        with signed_up(browser, mesh, java_script_enabled=javascript) as page:
            token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
            api = httpx.Client(base_url=mesh.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)

            page.get_by_label("Label").fill("reload-key")
            page.get_by_role("button", name="Create key").click()
            expect(page).to_have_url(re.compile(r"/keys\?created="))
            secret = page.locator("#secret").inner_text().strip()
            assert secret.startswith("mk-")
            page.reload()
            expect(page.get_by_role("status")).to_contain_text("shown once")
            assert secret not in page.content()
            page.go_back()  # what the browser may keep of the page that showed it
            assert secret not in page.content()
            (key,) = api.get("/api/keys").json()["data"]  # one key, however often the page was loaded

            page.goto(f"/keys/{key['id']}/rotate")
            page.get_by_role("button", name="Rotate").click()
            expect(page).to_have_url(re.compile(r"/keys/[0-9a-f-]+\?rotated="))
            rotated = page.locator("#secret").inner_text().strip()
            assert rotated.startswith("mk-") and rotated != secret
            expect(page.locator("#old-secret")).to_contain_text("still works until")  # a day's grace, the default
            page.reload()
            expect(page.get_by_role("status")).to_contain_text("shown once")
            assert rotated not in page.content()
            history = api.get(f"/api/keys/{key['id']}/events").json()["data"]
            assert [e["type"] for e in history].count("key.rotated") == 1

            page.goto("/billing")
            page.get_by_label("Amount").fill("50")
            page.get_by_label("Pay by").select_option("bank_transfer")
            page.get_by_role("button", name="Top up").click()
            expect(page).to_have_url(re.compile(r"/billing\?transfer=MESH-"))
            reference = page.locator("#reference").inner_text().strip()
            expect(page.get_by_text("Transfer 50.00 USD to IBAN")).to_be_visible()  # to the cent, as banks take it
            page.reload()  # the transfer's instructions again, and no second transfer
            expect(page.locator("#reference")).to_have_text(reference)
            expect(page.get_by_text("IBAN DE00 1234 5678 9012 3456 78")).to_be_visible()
            assert [t["reference"] for t in api.get("/api/billing/topups").json()] == [reference]

            if not javascript:  # with JavaScript the Test's answer is swapped into the page, which is not sent again
                page.goto("/templates/new")
                page.get_by_label("Name").fill("reload")
                page.get_by_label("Message 1").fill("Say {{word}}.")
                page.get_by_role("button", name="Create template").click()
                page.get_by_label("word", exact=True).fill("once")
                page.locator("#test-h + p + form").get_by_label("Model").select_option(FREE_MODEL)
                page.get_by_label("API key").fill(rotated)
                page.get_by_role("button", name="Test").click()
                expect(page).to_have_url(re.compile(r"/templates/[0-9a-f-]+\?tested="))
                expect(page.locator("#answer")).not_to_be_empty()
                trace_id = page.locator("#test-result code").inner_text()
                page.reload()
                expect(page.locator("#answer")).to_have_count(0)
                # one call reached the gateway: its log entry, and no other (a second would be logged as soon)
                for _ in range(100):
                    logged = api.get("/api/logs").json()["data"]
                    if trace_id in [entry["trace_id"] for entry in logged]:
                        break
                    time.sleep(0.1)
                assert [entry["trace_id"] for entry in logged] == [trace_id]
            api.close()


def test_logs_open_a_trace_and_keep_every_filter_across_ranges(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page:
        secrets = {}
        for label in ("logs-a", "logs-b"):
            page.get_by_role("textbox", name="Label", exact=True).fill(label)
            page.get_by_role("button", name="Create key").click()
            secrets[label] = page.locator("#secret").inner_text().strip()
        client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=secrets["logs-a"], max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model=FREE_MODEL, messages=[{"role": "user", "content": "find me"}]
        )
        trace_id = raw.headers["x-mesh-trace-id"]

        # from a key's page to its requests, then another range: the key filter stays, and is shown
        page.get_by_role("link", name="logs-a").click()
        page.get_by_role("link", name="requests with this key").click()
        expect(page.get_by_label("Active filters")).to_contain_text("key id logs-a")
        page.get_by_role("navigation", name="Time range").get_by_role("link", name="7d").click()
        expect(page).to_have_url(re.compile(r"key_id=[0-9a-f-]+.*range=7d|range=7d.*key_id="))
        expect(page.get_by_label("Active filters")).to_contain_text("key id logs-a")
        expect(page.get_by_label("Key")).to_have_value(re.compile(r"[0-9a-f-]{36}"))
        row = page.locator("tbody tr").filter(has_text=trace_id[-12:])  # the log shows the end of the id
        for _ in range(75):  # a page is drawn by the server: loaded again until the logs read model has the call
            if row.count():
                break
            time.sleep(0.2)
            page.reload()
        expect(row).to_have_count(1)
        page.get_by_label("Status").select_option("error")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_label("Active filters")).to_contain_text("status error")
        expect(page.locator("tbody tr")).to_have_count(0)
        page.locator(".pill", has_text="status").get_by_role("link", name="remove").click()
        expect(page.locator("tbody tr")).to_have_count(1)

        # a trace id opens its request; one that is not the account's, or not an id, says so
        page.get_by_label("Trace id").fill(trace_id)
        page.get_by_role("button", name="Open").click()
        expect(page).to_have_url(re.compile(rf"/logs/{trace_id}$"))
        page.goto("/logs")
        page.get_by_label("Trace id").fill(str(uuid.uuid4()))
        page.get_by_role("button", name="Open").click()
        expect(page.get_by_role("alert")).to_contain_text("in this account's logs")
        page.goto("/logs")
        page.get_by_label("Trace id").fill("01a23d3e")
        page.get_by_role("button", name="Open").click()
        expect(page.get_by_role("alert")).to_contain_text("a trace id is a UUID")


def test_refused_requests_show_on_the_key_and_in_logs(browser, dashboard_mesh):
    """A key whose calls are refused (no balance; a bad request) says how many and why, on the keys table, its
    page and in Logs, though no refused call is a log entry."""
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page:
        page.get_by_role("textbox", name="Label", exact=True).fill("refused-key")
        page.get_by_role("button", name="Create key").click()
        secret = page.locator("#secret").inner_text().strip()
        client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=secret, max_retries=0)
        codes = []
        for _ in range(3):
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
            codes.append(refused.value.body["code"])
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], n=0)
        codes.append(bad.value.body["code"])
        assert codes[:3] == [codes[0]] * 3 and codes[0] != codes[3], codes

        page.goto("/keys")
        cell = page.locator("tbody tr", has_text="refused-key").locator("td").nth(6)
        for _ in range(100):  # the gateway reports its counts every second here (MESH_REFUSALS_FLUSH_SECONDS)
            if cell.inner_text().strip() == "4":
                break
            time.sleep(0.2)
            page.reload()
        expect(cell).to_have_text("4")
        page.get_by_role("link", name="refused-key").click()
        expect(page.locator("#refused")).to_contain_text(f"4 refused: {codes[0]} 3, {codes[3]} 1")
        expect(page.get_by_text("error rate —")).to_be_visible()  # no request served: no rate to show
        expect(page.get_by_text("fit to budget: no")).to_be_visible()  # the history in words, not field=None
        assert "=None" not in page.content() and "=False" not in page.content()
        page.get_by_role("link", name="requests with this key").click()
        expect(page.locator("#refused")).to_contain_text(f"4 refused in this range with this key: {codes[0]} 3")
        expect(page.locator("tbody tr")).to_have_count(0)  # refused calls are counted, not logged one by one
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
        (key,) = http_calls.get(
            dashboard_mesh.url + "/api/keys", headers={"Authorization": f"Bearer {token}"}, timeout=15
        ).json()["data"]
        assert (key["stats"]["requests"], key["stats"]["refused"]) == (0, 4)
        assert key["stats"]["refused_by_code"] == {codes[0]: 3, codes[3]: 1}


def test_unknown_and_missing_pages_keep_the_layout_and_the_basics_are_there(browser, dashboard_mesh):
    from playwright.sync_api import expect

    html = {"accept": "text/html,application/xhtml+xml"}
    unknown = http_calls.get(dashboard_mesh.url + "/no-such-page", headers=html, timeout=15)
    assert unknown.status_code == 404 and "text/html" in unknown.headers["content-type"]
    assert "There is no page at /no-such-page." in unknown.text
    for path, headers in (("/api/no-such-route", html), ("/v1/no-such-route", html), ("/no-such-page", {})):
        answer = http_calls.get(dashboard_mesh.url + path, headers=headers, timeout=15)
        assert answer.status_code == 404 and answer.json()["error"]["code"] in ("not_found", "unknown_url"), path
    icon = http_calls.get(dashboard_mesh.url + "/favicon.ico", follow_redirects=True, timeout=15)
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")

    with signed_up(browser, dashboard_mesh) as page:
        expect(page.get_by_role("textbox", name="Label", exact=True)).to_have_attribute("maxlength", "100")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to the content")).to_be_focused()
        page.goto(f"/keys/{uuid.uuid4()}")  # no such key: the refusal in the layout, with the sections
        expect(page.get_by_role("alert")).to_contain_text("no API key")
        expect(page.get_by_role("navigation", name="Sections")).to_be_visible()
        page.goto("/no-such-page")
        expect(page.get_by_role("alert")).to_contain_text("There is no page")
        expect(page.get_by_role("navigation", name="Sections")).to_be_visible()


def test_every_key_setting_is_in_the_create_and_the_edit_form(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page:
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
        api = httpx.Client(base_url=dashboard_mesh.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        page.get_by_role("textbox", name="Label", exact=True).fill("every-setting")
        page.get_by_label("Spend cap").fill("12.50")
        page.get_by_label("Cap resets").select_option("monthly")
        page.get_by_label("Default model").select_option(FREE_MODEL)
        page.get_by_label("Allowed models").select_option([FREE_MODEL])
        page.get_by_label("Expires").fill("2031-01-31T18:00")
        page.get_by_label("Fit max_tokens").check()
        page.get_by_role("button", name="Create key").click()
        expect(page.locator("#secret")).to_be_visible()
        (key,) = api.get("/api/keys").json()["data"]
        assert (key["spend_cap_usd"], key["cap_reset"], key["default_model"]) == ("12.500000", "monthly", FREE_MODEL)
        assert key["allowed_models"] == [FREE_MODEL] and key["fit_to_budget"] is True
        assert key["expires_at"].startswith("2031-01-31T18:00:00")

        # the edit form shows them as they are, and changes each
        page.goto(f"/keys/{key['id']}")
        expect(page.get_by_label("Cap resets")).to_have_value("monthly")
        expect(page.get_by_label("Expires")).to_have_value("2031-01-31T18:00")
        expect(page.get_by_label("Fit max_tokens")).to_be_checked()
        between = datetime.now(timezone.utc)  # after the key was made, before it is changed
        time.sleep(0.01)
        page.get_by_label("Cap resets").select_option("")
        page.get_by_label("Allowed models").select_option([])
        page.get_by_label("Expires").fill("")
        page.get_by_label("Fit max_tokens").uncheck()
        page.get_by_role("button", name="Save").click()
        expect(page).to_have_url(re.compile(rf"/keys/{key['id']}$"))
        changed = api.get(f"/api/keys/{key['id']}").json()
        assert (changed["cap_reset"], changed["allowed_models"], changed["expires_at"]) == (None, None, None)
        assert changed["fit_to_budget"] is False and changed["spend_cap_usd"] == "12.500000"

        # the settings as they were before the change: through the API and on the page
        then = api.get(f"/api/keys/{key['id']}", params={"at": between.isoformat()}).json()
        assert (then["cap_reset"], then["allowed_models"], then["fit_to_budget"]) == ("monthly", [FREE_MODEL], True)
        before = api.get(f"/api/keys/{key['id']}", params={"at": "2020-01-01T00:00:00Z"})
        assert before.status_code == 404 and "did not exist yet" in before.json()["error"]["message"]
        page.goto(f"/keys/{key['id']}?at={quote(between.isoformat())}")
        expect(page.locator("#past")).to_contain_text("reset monthly")
        expect(page.locator("#past")).to_contain_text(FREE_MODEL)
        page.get_by_label("Settings on").fill("2020-01-01T00:00")
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_role("alert")).to_contain_text("did not exist yet")

        # a refusal keeps what was typed and says what is wrong
        page.goto("/keys")
        page.get_by_role("textbox", name="Label", exact=True).fill("bad-cap")
        page.get_by_label("Spend cap").fill("-5")
        page.get_by_label("Cap resets").select_option("weekly")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_role("alert")).to_contain_text("spend_cap_usd")
        expect(page.get_by_role("textbox", name="Label", exact=True)).to_have_value("bad-cap")
        expect(page.get_by_label("Cap resets")).to_have_value("weekly")
        api.close()


def test_the_billing_chart_says_when_it_is_empty_and_refuses_a_backwards_range(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh, viewport={"width": 375, "height": 800}) as page:
        page.goto("/billing")
        expect(page.locator("#no-spend")).to_contain_text("No spend between")
        expect(page.locator("svg.chart")).to_have_count(0)
        assert "$0.0000" not in page.locator("main").inner_text()  # no axis of zeros; money to the cent
        page.get_by_label("From", exact=True).fill("2026-11-05")
        page.get_by_label("To", exact=True).fill("2026-11-01")
        page.get_by_role("button", name="Show").click()
        expect(page.get_by_role("alert")).to_contain_text("from (2026-11-05) must not be after to (2026-11-01)")
        expect(page.get_by_role("navigation", name="Sections")).to_be_visible()


def test_a_card_that_asks_for_3d_secure_is_confirmed_by_stripe_js(browser, dashboard_mesh):
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page:
        page.goto("/billing")
        page.get_by_label("Amount").fill("10")
        page.get_by_label("Pay by").select_option("stripe")
        page.get_by_role("button", name="Top up").click()
        card = page.locator(".card-element")
        for field, value in (
            ("number", "4000002500003155"),
            ("exp_month", "12"),
            ("exp_year", "30"),
            ("cvc", "123"),
            ("postal_code", "42424"),
        ):
            card.get_by_placeholder(field).fill(value)
        page.get_by_role("button", name="Pay $10.00").click()
        page.get_by_role("button", name="Complete authentication").click()  # localstripe's 3-D Secure step
        expect(page).to_have_url(re.compile(r"/billing$"))
        expect(page.locator(".headline")).to_have_text("$10.00")


def test_a_wrong_password_is_said_on_the_login_page(browser, dashboard_mesh):
    from playwright.sync_api import expect

    context = browser.new_context(base_url=dashboard_mesh.url)
    page = context.new_page()
    try:
        page.goto("/login")
        page.get_by_label("Email").fill("nobody@example.com")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("alert")).to_have_text("email or password is wrong")
        expect(page.get_by_label("Email")).to_have_value("nobody@example.com")
        assert not any(c["name"] == "mesh_session" for c in context.cookies())
    finally:
        context.close()


def test_a_key_says_when_it_was_last_used_and_what_it_used_each_model_for(browser, dashboard_mesh):
    from playwright.sync_api import expect

    from api.dashboard.views import cents
    from tests.e2e.conftest import funded_key

    funded = funded_key(dashboard_mesh, "5", label="busy-key")
    key_url = f"{dashboard_mesh.url}/api/keys/{funded.created['id']}"
    auth = {"authorization": f"Bearer {funded.token}"}
    with signed_in(browser, dashboard_mesh, funded.token) as page:
        assert http_calls.get(key_url, headers=auth, timeout=15).json()["last_used_at"] is None
        page.goto(f"/keys/{funded.created['id']}")
        expect(page.locator("#last-used")).to_have_text("never")
        expect(page.locator("#by-model")).to_contain_text("No requests with this key yet.")

        client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=funded.key, max_retries=0)
        before = time.time()
        for model in (MODEL, FREE_MODEL, MODEL):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=100)
        after = time.time()
        for _ in range(100):
            key = http_calls.get(key_url, headers=auth, timeout=15).json()
            if key["stats"]["requests"] == 3:
                break
            time.sleep(0.1)
        from datetime import datetime

        last_used = datetime.fromisoformat(key["last_used_at"].replace("Z", "+00:00")).timestamp()
        assert before - 1 <= last_used <= after + 1, (before, key["last_used_at"], after)

        page.reload()
        expect(page.locator("#last-used")).not_to_have_text("never")
        rows = page.locator("#by-model tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator("td").nth(0)).to_have_text(MODEL)  # the dearest first
        expect(rows.nth(0).locator("td").nth(2)).to_have_text("2")
        expect(rows.nth(1).locator("td").nth(0)).to_have_text(FREE_MODEL)
        expect(rows.nth(1).locator("td").nth(2)).to_have_text("1")
        spent = int(Decimal(key["spend_usd"]) * 10**12)
        expect(rows.nth(0).locator("td").nth(6)).to_have_text(cents(spent))
        assert spent and cents(spent) != "$0.00"  # a spend under a cent still reads as something
        rows.nth(0).get_by_role("link", name=MODEL).click()
        page.wait_for_url(re.compile(r"/logs\?"))
        expect(page.locator("main tbody tr")).to_have_count(2)  # this key's requests on that model

        page.goto("/keys")
        row = page.locator("tbody tr", has_text="busy-key")
        expect(row.locator("td").nth(8)).not_to_have_text("never")
        shot(page, "keys-last-used")


def test_as_of_says_how_current_a_page_is_not_when_the_last_event_happened(browser, dashboard_mesh):
    from datetime import datetime, timezone

    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page:
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
        time.sleep(3)  # nothing happens meanwhile: the read models have had everything for three seconds
        as_of = http_calls.get(
            dashboard_mesh.url + "/api/keys", headers={"Authorization": f"Bearer {token}"}, timeout=15
        ).json()["as_of"]
        checked = datetime.fromisoformat(as_of["checked_at"].replace("Z", "+00:00"))
        assert (datetime.now(timezone.utc) - checked).total_seconds() < 2.5, as_of  # checked about every second
        assert checked >= datetime.fromisoformat(as_of["time"].replace("Z", "+00:00"))
        page.reload()
        shown = page.locator("h1 .asof").inner_text().removeprefix("as of ")
        now = datetime.now(timezone.utc)
        moment = datetime.combine(now.date(), datetime.strptime(shown, "%H:%M:%S").time(), timezone.utc)
        assert abs((now - moment).total_seconds()) < 3.5, (shown, now)
        expect(page.locator("h1 .asof")).to_be_visible()


def test_every_page_fits_a_phone_and_a_desktop_and_is_pictured(browser, dashboard_mesh):
    """Each page of the dashboard at 1280 px and at 375 px: nothing wider than the screen, no script error, and a
    screenshot of each in test-artifacts/dashboard/page-<name>-<width>.png."""
    from tests.e2e.conftest import funded_key

    funded = funded_key(dashboard_mesh, "5", label="pictured")
    auth = {"authorization": f"Bearer {funded.token}"}
    operator = {"authorization": f"Bearer {dashboard_mesh.operator_token}"}
    client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=funded.key, max_retries=0)
    answer = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    trace = answer.headers["x-mesh-trace-id"]
    template = http_calls.post(
        dashboard_mesh.url + "/api/templates",
        headers=auth,
        json={"name": "pictured", "messages": [{"role": "user", "content": "Say {{word}}"}]},
        timeout=15,
    )
    assert template.status_code == 201, template.text
    for _ in range(100):  # the page of the request needs the logs read model to have it
        if http_calls.get(f"{dashboard_mesh.url}/api/logs/{trace}", headers=auth, timeout=15).status_code == 200:
            break
        time.sleep(0.1)
    key_id, template_id = funded.created["id"], template.json()["id"]
    from tests.e2e.test_operators import make_operator

    address = http_calls.get(f"{dashboard_mesh.url}/admin/accounts/{funded.account_id}", headers=operator, timeout=15)
    make_operator(dashboard_mesh, address.json()["email"], funded.token)  # the operator's pages too
    signed_in = {
        "keys": "/keys",
        "key": f"/keys/{key_id}",
        "key-rotate": f"/keys/{key_id}/rotate",
        "billing": "/billing",
        "billing-latency": "/billing?series=latency&range=7d",
        "billing-by-key": "/billing?by=key&series=tokens",
        "logs": "/logs",
        "log-entry": f"/logs/{trace}",
        "models": "/models",
        "templates": "/templates",
        "template-new": "/templates/new",
        "template": f"/templates/{template_id}",
        "not-found": "/no-such-page",
        "operator-support": f"/operator/support?trace_id={trace}",
        "operator-accounts": "/operator/accounts",
        "operator-account": f"/operator/accounts/{funded.account_id}",
        "operator-topups": "/operator/topups?status=all",
        "operator-models": "/operator/models",
        "operator-system": "/operator/system",
        "operator-audit": "/operator/audit",
    }
    signed_out = {"login": "/login", "signup": "/signup"}
    for width, height in ((1280, 900), (375, 800)):
        context = browser.new_context(base_url=dashboard_mesh.url, viewport={"width": width, "height": height})
        context.set_default_timeout(TIMEOUT_MS)
        try:
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for name, path in signed_out.items():
                page.goto(path)
                assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
                shot(page, f"page-{name}-{width}")
            context.add_cookies([{"name": "mesh_session", "value": funded.token, "url": dashboard_mesh.url}])
            for name, path in signed_in.items():
                page.goto(path)
                assert page.locator("nav").first.is_visible(), path  # every page keeps the navigation
                assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
                shot(page, f"page-{name}-{width}")
            assert errors == []
        finally:
            context.close()


def test_a_streamed_requests_page_counts_the_upstreams_wait_in_its_first_token(browser, dashboard_mesh, fake_openai):
    """The fake upstream waits 200 ms before its response's headers: the request's page shows a first token
    and an upstream time of at least that, measured from the request's arrival as its client measures them."""
    from tests.e2e.conftest import funded_key

    funded = funded_key(dashboard_mesh, "5", label="streamed")
    client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=funded.key, max_retries=0)
    fake_openai.delay = 0.2
    try:
        started = time.monotonic()
        with client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=20, stream=True
        ) as streamed:
            trace = streamed.headers["x-mesh-trace-id"]
            chunks = list(streamed.iter_lines())
        measured_ms = (time.monotonic() - started) * 1000
    finally:
        fake_openai.delay = 0.0
    assert chunks
    with signed_in(browser, dashboard_mesh, funded.token) as page:
        for _ in range(100):  # the page is drawn by the server: until the logs read model has the request
            if page.goto(f"/logs/{trace}").status == 200:
                break
            time.sleep(0.1)
        latency = page.locator("dt:text('Latency') + dd").inner_text()
        shown = {
            part.split(" ", 1)[0]: float(part.split(" ", 1)[1].removesuffix(" ms").replace(",", ""))
            for part in (p.strip().replace("first token", "first_token") for p in latency.split("·"))
        }
        assert 200 <= shown["first_token"] <= shown["total"] <= measured_ms, (shown, measured_ms)
        assert 200 <= shown["upstream"] <= shown["total"], shown


def test_the_models_page_shows_the_prices_in_force_at_a_past_instant(browser, dashboard_mesh):
    from playwright.sync_api import expect

    mesh = dashboard_mesh
    operator = {"authorization": f"Bearer {mesh.operator_token}"}
    r = http_calls.post(
        mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    )
    minute_before = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M")  # as the datetime-local input sends it
    time.sleep(0.01)
    changed = http_calls.put(mesh.url + f"/admin/models/{MODEL}", headers=operator, json={"prompt_usd_per_1k": "7"})
    assert changed.status_code == 200, changed.text
    try:
        with signed_in(browser, mesh, r.json()["management_token"]) as page:
            page.goto("/models")
            row = page.get_by_role("row").filter(has_text=MODEL)
            expect(row).to_contain_text("$7.000000")
            page.get_by_label("Prices on").fill(minute_before)
            page.get_by_role("button", name="Show").click()
            expect(page).to_have_url(re.compile(r"at="))
            expect(page.get_by_role("row").filter(has_text=MODEL)).to_contain_text("$0.500000")
            expect(page.get_by_role("heading", level=1)).to_contain_text("prices on")
            page.goto("/models?at=not-a-time")
            expect(page.get_by_role("alert")).to_contain_text("is not a date and time")
    finally:
        http_calls.put(mesh.url + f"/admin/models/{MODEL}", headers=operator, json={"prompt_usd_per_1k": "0.5"})


def test_a_keys_rate_limits_are_set_on_its_page_and_its_refusals_counted(browser, dashboard_mesh):
    """rpm_limit and tpm_limit in the edit form: a refusal beside the form keeps what was typed; a limit set
    refuses the requests over it (429 key_rpm_limit), counted on the key's page and in its stats."""
    from playwright.sync_api import expect

    with signed_up(browser, dashboard_mesh) as page:
        token = next(c["value"] for c in page.context.cookies() if c["name"] == "mesh_session")
        api = httpx.Client(base_url=dashboard_mesh.url, headers={"Authorization": f"Bearer {token}"}, timeout=15)
        page.get_by_role("textbox", name="Label", exact=True).fill("limited")
        page.get_by_label("Default model").select_option(FREE_MODEL)
        page.get_by_label("Tokens a minute").fill("100000")
        page.get_by_role("button", name="Create key").click()
        secret = page.locator("#secret").inner_text().strip()
        (key,) = api.get("/api/keys").json()["data"]
        assert (key["rpm_limit"], key["tpm_limit"]) == (None, 100000)

        page.goto(f"/keys/{key['id']}")
        expect(page.get_by_label("Tokens a minute")).to_have_value("100000")
        page.get_by_label("Requests a minute").fill("0")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_role("alert")).to_contain_text("rpm_limit must be a whole number from 1 to 1000000")
        expect(page.get_by_label("Requests a minute")).to_have_value("0")  # what was typed, beside the refusal
        assert api.get(f"/api/keys/{key['id']}").json()["rpm_limit"] is None  # and nothing changed
        page.get_by_label("Requests a minute").fill("2")
        page.get_by_label("Tokens a minute").fill("")
        page.get_by_role("button", name="Save").click()
        expect(page).to_have_url(re.compile(rf"/keys/{key['id']}$"))  # post/redirect/get
        expect(page.locator("#rate-limits")).to_contain_text("2 requests a minute")
        changed = api.get(f"/api/keys/{key['id']}").json()
        assert (changed["rpm_limit"], changed["tpm_limit"]) == (2, None)

        client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=secret, max_retries=0)
        left = 60 - time.time() % 60
        if left < 15:  # the three requests in one UTC minute
            time.sleep(left + 0.05)
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model=FREE_MODEL, messages=[{"role": "user", "content": "hi"}]
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "2"
        with pytest.raises(openai.RateLimitError) as refused:
            client.chat.completions.create(model=FREE_MODEL, messages=[{"role": "user", "content": "hi"}])
        assert refused.value.body["code"] == "key_rpm_limit"
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60

        for _ in range(100):  # the gateway reports its counts every second here (MESH_REFUSALS_FLUSH_SECONDS)
            stats = api.get(f"/api/keys/{key['id']}").json()["stats"]
            if stats["refused_by_code"]:
                break
            time.sleep(0.2)
        assert stats["refused_by_code"] == {"key_rpm_limit": 1} and stats["requests"] == 2
        page.reload()
        expect(page.locator("#refused")).to_contain_text("1 refused: key_rpm_limit 1")
        api.close()
