"""Billing over real HTTP: the balance at any past instant, and spend history that adds up."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from decimal import Decimal


from tests import http_calls
from tests.e2e.test_walking_skeleton import api, cost, sign_up, wait_for_balance


def now() -> str:
    moment = datetime.now(timezone.utc).isoformat()
    time.sleep(0.05)
    return moment


def test_balance_at_any_instant_and_spend_history(mesh):
    account_id, token = sign_up(mesh)
    before_credit = now()
    api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "10", "reason": "first"},
    )
    after_credit = now()
    key = api(mesh, "POST", "/api/keys", token, json={"label": "history"}).json()["key"]
    for text in ("one", "one two", "one two three"):
        r = api(
            mesh,
            "POST",
            "/v1/chat/completions",
            key,
            json={"model": "acme/gpt-test", "messages": [{"role": "user", "content": text}]},
        )
        assert r.status_code == 200, r.text
    spent = cost(1, 7) + cost(2, 7) + cost(3, 7)
    wait_for_balance(mesh, token, Decimal("10") - spent)
    after_usage = now()
    api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "5", "reason": "second"},
    )

    def balance_at(moment: str) -> Decimal:
        r = api(mesh, "GET", "/api/billing/balance", token, params={"at": moment})
        assert r.status_code == 200, r.text
        assert r.json()["as_of"]["position"] > 0
        return Decimal(r.json()["balance_usd"])

    assert balance_at(before_credit) == 0
    assert balance_at(after_credit) == 10
    assert balance_at(after_usage) == Decimal("10") - spent
    assert Decimal(api(mesh, "GET", "/api/billing/balance", token).json()["balance_usd"]) == 15 - spent

    by_model_day = api(mesh, "GET", "/api/billing/spend", token, params={"group_by": "model,day"}).json()
    assert [row["group"]["model"] for row in by_model_day["data"]] == ["acme/gpt-test"]
    assert by_model_day["data"][0]["requests"] == 3
    assert Decimal(by_model_day["total_spend_usd"]) == spent  # the balance moved by exactly this
    window = api(
        mesh,
        "GET",
        "/api/billing/spend",
        token,
        params={"group_by": "provider,hour", "from": after_credit, "to": after_usage},
    ).json()
    assert Decimal(window["total_spend_usd"]) == balance_at(after_credit) - balance_at(after_usage)
    by_key = api(mesh, "GET", "/api/billing/spend", token, params={"group_by": "key"}).json()
    assert len(by_key["data"]) == 1 and by_key["data"][0]["prompt_tokens"] == 6

    bad = api(mesh, "GET", "/api/billing/spend", token, params={"group_by": "colour"})
    assert bad.status_code == 400 and "provider, model, key, day, hour" in bad.json()["error"]["message"]
    naive = api(mesh, "GET", "/api/billing/balance", token, params={"at": "2026-01-01T00:00:00"})
    assert naive.status_code == 400


def test_a_spend_history_by_day_or_hour_covers_a_bounded_range(mesh):
    """1970 to 8999 by day is 2.56 million days: refused with the bound, on the API and on the dashboard page."""
    _, token = sign_up(mesh)
    epoch, far = "1970-01-01T00:00:00Z", "8999-12-31T00:00:00Z"
    for group_by, start, end, bound in [
        ("day", epoch, far, "366 days"),
        ("model,day", epoch, None, "366 days"),  # `to` left out: now
        ("hour", "2027-01-01T00:00:00Z", "2027-02-01T00:00:01Z", "31 days"),
        ("day,hour", "2027-01-01T00:00:00Z", "2027-03-01T00:00:00Z", "31 days"),
    ]:
        params = {"group_by": group_by, "from": start, **({"to": end} if end else {})}
        r = api(mesh, "GET", "/api/billing/spend", token, params=params)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "range_too_long" and error["param"] == "from", error
        assert f"by {group_by.split(',')[-1]} covers at most {bound}" in error["message"], error
    for group_by, start, end in [
        ("day", "2027-01-01T00:00:00Z", "2028-01-02T00:00:00Z"),  # 366 days
        ("hour", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"),  # 31 days
        ("model", epoch, far),  # no bucket per day: any range
        ("day", None, None),  # the whole history: the days with spend
    ]:
        params = {"group_by": group_by, **({"from": start, "to": end} if start else {})}
        r = api(mesh, "GET", "/api/billing/spend", token, params=params)
        assert r.status_code == 200, r.text

    page = http_calls.get(
        mesh.url + "/billing", params={"start": "1970-01-01", "end": "8999-12-31"}, cookies={"mesh_session": token}
    )
    assert page.status_code == 400 and "a spend history by day covers at most 366 days" in page.text
    shown = http_calls.get(
        mesh.url + "/billing", params={"start": "2027-01-01", "end": "2027-12-31"}, cookies={"mesh_session": token}
    )
    assert shown.status_code == 200, shown.text[-2000:]
    last = http_calls.get(  # the last day there is: refused in words, as the API refuses it
        mesh.url + "/billing", params={"start": "9999-12-31", "end": "9999-12-31"}, cookies={"mesh_session": token}
    )
    assert last.status_code == 400 and "from must be in the years 1970 to 8999" in last.text
