"""The dashboard follows the account's events (GET /api/events on the session cookie) instead of polling: in a real
Chromium, the balance on Billing and the newest page of Logs change after a request through the gateway, without a
reload, and no page asks the server on a timer."""

from __future__ import annotations

import openai

from tests.e2e.conftest import funded_key
from tests.e2e.test_dashboard import TIMEOUT_MS, balance_pico, browser, shot, signed_in  # noqa: F401 (fixtures)

MODEL = "acme/gpt-test"


def test_balance_and_logs_move_with_a_request_without_a_reload(browser, mesh):  # noqa: F811
    from playwright.sync_api import expect

    account = funded_key(mesh, "5")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=account.key, max_retries=0)
    with signed_in(browser, mesh, account.token) as page:
        asked: list[str] = []
        page.on("request", lambda request: asked.append(request.url))
        page.goto("/billing")
        expect(page.locator(".headline")).to_have_text("$5.00")
        page.wait_for_timeout(4000)  # longer than the 3 s the balance was polled at: nothing asks on a timer
        assert [url for url in asked if "/billing/balance" in url] == []
        assert any("/api/events" in url for url in asked)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello live"}])
        expect(page.locator(".headline")).not_to_have_text("$5.00", timeout=TIMEOUT_MS)
        assert 0 < balance_pico(page) < 5 * 10**12
        assert sum("/billing/balance?position=" in url for url in asked) >= 1
        shot(page, "live-balance")

        page.goto("/logs")
        expect(page.locator("#log-rows tbody tr")).to_have_count(1)
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hello again"}]
        )
        trace = raw.headers["x-mesh-trace-id"]
        expect(page.locator("#log-rows tbody tr")).to_have_count(2, timeout=TIMEOUT_MS)
        expect(page.locator(f"#log-rows a[href='/logs/{trace}']")).to_be_visible()
