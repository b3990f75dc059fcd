"""The operators' section of the dashboard in a real Chromium against `mesh up`: an operator (made with `mesh
operators add`) finds a customer's request by trace id and opens the account, grants credits and the customer's
balance moves, confirms a pending bank transfer, suspends an account (its key gets 402) and resumes it (the key
works), changes a price (the next request is billed at it), enables a model the provider offers (a refusal shown
beside its form with the input kept; then it is served and billed at its price), and the audit names the operator
for each action. A non-operator gets 403 on every page and every action of the section."""

from __future__ import annotations

import re
import time
import uuid
from decimal import Decimal

import httpx
import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import funded_key
from tests.e2e.test_dashboard import MODEL, browser, dashboard_mesh, shot, signed_in  # noqa: F401 (fixtures)
from tests.e2e.test_operators import make_operator

MESSAGES = [{"role": "user", "content": "hello"}]


def _api(mesh, method: str, path: str, token: str, **kwargs) -> httpx.Response:
    return http_calls.request(
        method, mesh.url + path, headers={"authorization": f"Bearer {token}"}, timeout=30, **kwargs
    )


def _email(mesh, account_id: str) -> str:
    return _api(mesh, "GET", f"/admin/accounts/{account_id}", mesh.operator_token).json()["email"]


@pytest.fixture(scope="module")
def operator(dashboard_mesh):
    """An account made an operator on the command line: its FundedKey."""
    op = funded_key(dashboard_mesh, "1", label="operator's own")
    make_operator(dashboard_mesh, _email(dashboard_mesh, op.account_id), op.token)
    return op


def _balance(mesh, token: str) -> str:
    return _api(mesh, "GET", "/api/billing/balance", token).json()["balance_usd"]


def _audited(mesh, account_id: str | None = None) -> list[tuple[str, str, str]]:
    """(action, operator, target) of the newest operator actions (on one account)."""
    params = {"limit": 100, **({"account_id": account_id} if account_id else {})}
    audit = _api(mesh, "GET", "/admin/audit", mesh.operator_token, params=params).json()["data"]
    return [(a["action"], a["operator"], a["target"]) for a in audit]


def _audit_page_names(page, operator_email: str, target: str, *actions: str) -> None:
    """The Audit page has a row for each action on `target` (shown by its end) naming the operator by email."""
    from playwright.sync_api import expect

    page.goto("/operator/audit")
    for action in actions:
        rows = page.locator("tbody tr").filter(has_text=action).filter(has=page.locator(f"code[title='{target}']"))
        expect(rows.filter(has=page.locator("td.who", has_text=operator_email))).to_have_count(1)


def _logged(mesh, trace_id: str) -> None:
    deadline = time.monotonic() + 10
    while _api(mesh, "GET", f"/admin/logs/{trace_id}", mesh.operator_token).status_code != 200:
        assert time.monotonic() < deadline, f"{trace_id} never reached the logs"
        time.sleep(0.1)


def test_support_finds_a_request_by_trace_id_and_grants_credits_on_its_account(browser, dashboard_mesh, operator):
    from playwright.sync_api import expect

    customer = funded_key(dashboard_mesh, "2")
    client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=customer.key, max_retries=0)
    trace_id = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=50).headers[
        "x-mesh-trace-id"
    ]
    _logged(dashboard_mesh, trace_id)
    address = _email(dashboard_mesh, customer.account_id)
    with signed_in(browser, dashboard_mesh, operator.token) as page:
        page.goto("/keys")
        page.get_by_role("link", name="Operator", exact=True).click()
        page.wait_for_url(re.compile(r"/operator/support$"))
        page.get_by_label("Trace id").fill(trace_id)
        page.get_by_role("button", name="Find the request").click()
        expect(page.locator("#trace")).to_have_text(trace_id)
        expect(page.locator("dl.facts")).to_contain_text(MODEL)
        shot(page, "operator-support")
        page.locator("#account-link").click()
        page.wait_for_url(re.compile(rf"/operator/accounts/{customer.account_id}$"))
        expect(page.locator("h1")).to_contain_text(address)
        expect(page.locator("#requests + .scroll")).to_contain_text(trace_id[-4:])
        before = _balance(dashboard_mesh, customer.token)  # 2 granted less the request's cost
        shown = page.locator("#balance").inner_text()
        # a refusal is shown beside the form, the input kept; nothing changes
        credits = page.locator("form[action$='/credits']")
        credits.get_by_label("Amount (USD)").fill("-3")
        credits.get_by_label("Reason").fill("goodwill")
        credits.get_by_role("button", name="Grant credits").click()
        expect(page.locator("#action-error")).to_be_visible()
        expect(credits.get_by_label("Reason")).to_have_value("goodwill")
        assert _balance(dashboard_mesh, customer.token) == before
        credits.get_by_label("Amount (USD)").fill("3")
        credits.get_by_role("button", name="Grant credits").click()
        page.wait_for_url(re.compile(rf"/operator/accounts/{customer.account_id}$"))  # post/redirect/get
        expect(page.locator("#balance")).not_to_have_text(shown)
        after = Decimal(before) + 3
        assert Decimal(_balance(dashboard_mesh, customer.token)) == after
        expect(page.locator("#balance")).to_have_text(f"${after.quantize(Decimal('0.01'))}")
        page.reload()  # a reload repeats nothing
        assert Decimal(_balance(dashboard_mesh, customer.token)) == after
        taking = page.locator("form[action$='/debits']")
        taking.get_by_label("Amount (USD)").fill("100")
        taking.get_by_label("Reason").fill("too much")
        page.once("dialog", lambda dialog: dialog.accept())
        taking.get_by_role("button", name="Take back credits").click()
        expect(page.locator("#action-error")).to_contain_text("can be taken back")
        shot(page, "operator-account")
        _audit_page_names(page, _email(dashboard_mesh, operator.account_id), customer.account_id, "credits granted")
    assert Decimal(_balance(dashboard_mesh, customer.token)) == after
    assert _audited(dashboard_mesh, customer.account_id) == [
        ("credits granted", operator.account_id, customer.account_id),
        ("credits granted", "token", customer.account_id),  # funded_key's, with the operator token
    ]


def test_search_finds_an_account_by_part_of_its_email(browser, dashboard_mesh, operator):
    customer = funded_key(dashboard_mesh, "1")
    address = _email(dashboard_mesh, customer.account_id)
    with signed_in(browser, dashboard_mesh, operator.token) as page:
        page.goto("/operator/accounts")
        page.get_by_label("Email or account id").fill(address[1:6])
        page.get_by_role("button", name="Find").click()
        page.get_by_role("link", name=address).click()
        page.wait_for_url(re.compile(rf"/operator/accounts/{customer.account_id}$"))
        shot(page, "operator-accounts")


def test_an_operator_confirms_a_pending_transfer_and_rejects_another(browser, dashboard_mesh, operator):
    from playwright.sync_api import expect

    customer = funded_key(dashboard_mesh, "1")
    references = []
    for amount in ("40", "15"):
        started = _api(
            dashboard_mesh,
            "POST",
            "/api/billing/topups",
            customer.token,
            json={"amount_usd": amount, "provider": "bank_transfer"},
        )
        assert started.status_code == 201, started.text
        references.append(started.json()["reference"])
    paid, never = references
    with signed_in(browser, dashboard_mesh, operator.token) as page:
        page.goto("/operator/topups")
        row = page.locator(f"#topup-{paid}")
        expect(row).to_contain_text("$40.00")
        shot(page, "operator-topups")
        row.get_by_label("Amount received (USD)").fill("39.50")
        row.get_by_role("button", name="Confirm").click()
        page.wait_for_url(re.compile(r"/operator/topups\?status=pending$"))
        expect(page.locator(f"#topup-{paid}")).to_have_count(0)  # no longer pending
        other = page.locator(f"#topup-{never}")
        other.get_by_label("Reason").fill("never arrived")
        other.get_by_role("button", name="Reject").click()
        page.wait_for_url(re.compile(r"/operator/topups\?status=pending$"))
        expect(page.locator(f"#topup-{never}")).to_have_count(0)
        page.goto("/operator/topups?status=rejected")
        expect(page.locator(f"#topup-{never}")).to_contain_text("never arrived")
        topups = _api(dashboard_mesh, "GET", "/admin/accounts/" + customer.account_id, operator.token).json()["topups"]
        ids = {t["reference"]: t["id"] for t in topups}
        address = _email(dashboard_mesh, operator.account_id)
        _audit_page_names(page, address, ids[paid], "transfer confirmed")
        _audit_page_names(page, address, ids[never], "transfer rejected")
    assert _balance(dashboard_mesh, customer.token) == "40.500000"  # 1 granted + 39.50 received, nothing spent
    acts = _audited(dashboard_mesh)
    assert ("transfer confirmed", operator.account_id, ids[paid]) in acts
    assert ("transfer rejected", operator.account_id, ids[never]) in acts


def test_a_suspended_accounts_key_gets_402_and_works_again_once_resumed(browser, dashboard_mesh, operator):
    from playwright.sync_api import expect

    customer = funded_key(dashboard_mesh, "2")
    client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=customer.key, max_retries=0)
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50).choices
    with signed_in(browser, dashboard_mesh, operator.token) as page:
        page.goto(f"/operator/accounts/{customer.account_id}")
        suspend = page.locator("form[action$='/suspend']")
        suspend.get_by_label("Reason").fill("card testing")
        asked: list[str] = []
        page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
        suspend.get_by_role("button", name="Suspend the account").click()  # asked once, naming it; declined
        expect(page.locator("#state")).to_contain_text("active")
        assert asked == [f"Suspend {_email(dashboard_mesh, customer.account_id)}? Its keys stop working at once."]
        page.once("dialog", lambda dialog: dialog.accept())
        suspend.get_by_role("button", name="Suspend the account").click()
        expect(page.locator("#state")).to_contain_text("suspended")
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)
        assert refused.value.status_code == 402 and refused.value.body["code"] == "account_suspended"
        with signed_in(browser, dashboard_mesh, customer.token) as customer_page:  # nothing deleted, no new keys
            customer_page.goto("/keys")
            customer_page.get_by_role("textbox", name="Label").fill("another")
            customer_page.get_by_role("button", name="Create key").click()
            expect(customer_page.locator("p.error")).to_contain_text("suspended")
        resume = page.locator("form[action$='/resume']")
        resume.get_by_label("Reason").fill("explained")
        resume.get_by_role("button", name="Resume the account").click()
        expect(page.locator("#state")).to_contain_text("active")
        address = _email(dashboard_mesh, operator.account_id)
        _audit_page_names(page, address, customer.account_id, "account suspended", "account resumed")
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50).choices
    assert _audited(dashboard_mesh, customer.account_id)[:2] == [
        ("account resumed", operator.account_id, customer.account_id),
        ("account suspended", operator.account_id, customer.account_id),
    ]


def test_a_price_change_bills_the_next_request_and_the_audit_names_the_operator(browser, dashboard_mesh, operator):
    from playwright.sync_api import expect

    customer = funded_key(dashboard_mesh, "2")
    client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=customer.key, max_retries=0)
    address = _email(dashboard_mesh, operator.account_id)
    try:
        with signed_in(browser, dashboard_mesh, operator.token) as page:
            page.goto("/operator/models")
            row = page.locator(f"tr[id='{MODEL}']")
            row.get_by_label("prompt", exact=True).fill("2")
            row.get_by_label("completion", exact=True).fill("4")
            row.get_by_role("button", name="Change").click()
            expect(page.locator(f"tr[id='{MODEL}'] input[name=prompt_usd_per_1k]")).to_have_attribute(
                "placeholder", "2.000000"
            )
            page.get_by_label("Provider").select_option("acme")
            page.get_by_role("button", name="List its models").click()
            offer = page.locator("#offer")
            expect(offer.locator("tr", has_text="gpt-test").first).to_contain_text(MODEL)  # served, and by which
            expect(offer.locator("tr", has_text="gpt-4o-mini")).to_contain_text("not served")
            shot(page, "operator-models")
            raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES, max_tokens=50)
            trace_id, usage = raw.headers["x-mesh-trace-id"], raw.parse().usage
            _logged(dashboard_mesh, trace_id)
            entry = _api(dashboard_mesh, "GET", f"/admin/logs/{trace_id}", operator.token).json()
            expected = (usage.prompt_tokens * 2 + usage.completion_tokens * 4) / 1000
            assert float(entry["cost_usd"]) == pytest.approx(expected)  # both exact decimals of the same price
            page.goto("/operator/audit")
            first = page.locator("tbody tr").first
            expect(first).to_contain_text("price changed")
            expect(first.locator(".who")).to_have_text(address)
            shot(page, "operator-audit")
            page.goto("/operator/system")
            page.get_by_role("button", name="Retry quarantined events").click()
            page.wait_for_url(re.compile(r"/operator/system\?retried="))  # post/redirect/get
            expect(page.get_by_role("status")).to_contain_text("0 applied, 0 still quarantined")
            expect(page.locator("#status")).to_have_text("ok")
            assert ("price changed", operator.account_id, MODEL) in _audited(dashboard_mesh)
    finally:
        _api(
            dashboard_mesh,
            "PUT",
            f"/admin/models/{MODEL}",
            dashboard_mesh.operator_token,
            json={"prompt_usd_per_1k": "0.5", "completion_usd_per_1k": "1.5"},
        )


def test_an_operator_enables_a_model_the_provider_offers(browser, dashboard_mesh, operator, fake_openai):
    from playwright.sync_api import expect

    upstream = "gpt-dash-" + uuid.uuid4().hex[:6]
    model_id = "acme/" + upstream
    fake_openai.models.append(upstream)  # offered by the provider, not in mesh.toml
    customer = funded_key(dashboard_mesh, "2")
    client = openai.OpenAI(base_url=dashboard_mesh.url + "/v1", api_key=customer.key, max_retries=0)
    try:
        with signed_in(browser, dashboard_mesh, operator.token) as page:
            page.goto("/operator/models?provider=acme")
            form = page.get_by_role("form", name=f"Enable {upstream}")
            expect(form.get_by_label("Mesh id")).to_have_value(model_id)  # prefilled <provider>/<upstream id>
            form.get_by_label("Mesh id").fill(MODEL)  # taken: refused beside the form, the input kept
            form.get_by_label("prompt", exact=True).fill("2")
            form.get_by_label("completion", exact=True).fill("4")
            form.get_by_role("button", name="Enable").click()
            form = page.get_by_role("form", name=f"Enable {upstream}")
            expect(page.locator("#offer p.error")).to_contain_text("is a model of mesh.toml or an alias")
            expect(form.get_by_label("Mesh id")).to_have_value(MODEL)
            expect(form.get_by_label("completion", exact=True)).to_have_value("4")
            assert model_id not in {m.id for m in client.models.list()}
            form.get_by_label("Mesh id").fill(model_id)
            form.get_by_role("button", name="Enable").click()
            page.wait_for_url(re.compile(r"/operator/models\?provider=acme"))  # post/redirect/get
            row = page.locator(f"tr[id='{model_id}']")  # in the model list now
            expect(row).to_contain_text("enabled")
            expect(row.locator("input[name=prompt_usd_per_1k]")).to_have_attribute("placeholder", "2.000000")
            expect(page.locator("#offer tr", has_text=upstream)).to_contain_text(model_id)
            shot(page, "operator-models-enabled")
            page.reload()  # a reload repeats nothing
            assert [a for a in _audited(dashboard_mesh) if a[2] == model_id] == [
                ("model added", operator.account_id, model_id)
            ]
        raw = client.chat.completions.with_raw_response.create(model=model_id, messages=MESSAGES, max_tokens=50)
        trace_id, usage = raw.headers["x-mesh-trace-id"], raw.parse().usage
        _logged(dashboard_mesh, trace_id)
        entry = _api(dashboard_mesh, "GET", f"/admin/logs/{trace_id}", operator.token).json()
        expected = (usage.prompt_tokens * 2 + usage.completion_tokens * 4) / Decimal(1000)
        assert (entry["model"], Decimal(entry["cost_usd"])) == (model_id, expected)
    finally:
        fake_openai.models.remove(upstream)
        _api(dashboard_mesh, "PUT", f"/admin/models/{model_id}", dashboard_mesh.operator_token, json={"enabled": False})


OPERATOR_PAGES = [
    "/operator",
    "/operator/support",
    "/operator/support?trace_id=" + str(uuid.uuid4()),
    "/operator/accounts",
    "/operator/accounts/" + str(uuid.uuid4()),
    "/operator/topups",
    "/operator/models",
    "/operator/system",
    "/operator/audit",
]
OPERATOR_ACTIONS = [
    "/operator/accounts/{account}/credits",
    "/operator/accounts/{account}/debits",
    "/operator/accounts/{account}/suspend",
    "/operator/accounts/{account}/resume",
    "/operator/topups/{reference}/confirm",
    "/operator/topups/{reference}/reject",
    f"/operator/models/{MODEL}",
    "/operator/models",
    "/operator/system/retry",
]


def test_a_non_operator_gets_403_on_every_operator_page_and_action(browser, dashboard_mesh, operator):
    from playwright.sync_api import expect

    customer = funded_key(dashboard_mesh, "3")
    reference = _api(
        dashboard_mesh,
        "POST",
        "/api/billing/topups",
        customer.token,
        json={"amount_usd": "20", "provider": "bank_transfer"},
    ).json()["reference"]
    with signed_in(browser, dashboard_mesh, customer.token) as page:
        page.goto("/keys")
        expect(page.get_by_role("link", name="Operator", exact=True)).to_have_count(0)
        for path in OPERATOR_PAGES:
            answer = page.goto(path)
            assert answer.status == 403, path
            expect(page.locator("p.error")).to_contain_text("for the operators of this Mesh")
            assert page.locator("nav").first.is_visible(), path
        page.goto("/keys")
        token = page.locator("input[name=_csrf_token]").first.get_attribute("value")
        for template in OPERATOR_ACTIONS:
            path = template.format(account=customer.account_id, reference=reference)
            answer = page.request.post(
                path, form={"_csrf_token": token, "amount_usd": "100", "reason": "mine", "prompt_usd_per_1k": "0"}
            )
            assert answer.status == 403, path
    # nothing changed: the balance, the pending transfer, the price; and nothing was audited
    assert _balance(dashboard_mesh, customer.token) == "3.000000"
    pending = _api(dashboard_mesh, "GET", "/admin/topups", dashboard_mesh.operator_token).json()["data"]
    assert reference in [t["reference"] for t in pending]
    audit = _api(
        dashboard_mesh, "GET", "/admin/audit", dashboard_mesh.operator_token, params={"account_id": customer.account_id}
    ).json()["data"]
    assert [a["operator"] for a in audit] == ["token"]  # funded_key's grant only
