"""What every answer of a running Mesh says about itself: no framing, no sniffing, no Referer to other sites, no
caching of an answer that shows a secret; what /health tells anyone and what only the operator."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests import http_calls
from tests.e2e.test_dashboard import browser  # noqa: F401  (a fixture)
from tests.e2e.test_walking_skeleton import api

PASSWORD = "correct horse battery"
# Litestar's answers of every kind: a page, a JSON error, health, the docs page and document, a static file, a 404
PATHS = ["/login", "/api/keys", "/health", "/schema", "/schema/openapi.json", "/static/dashboard.css", "/nowhere"]
HEADERS = {
    "x-frame-options": lambda v: v == "DENY",
    "content-security-policy": lambda v: "frame-ancestors 'none'" in v,
    "x-content-type-options": lambda v: v == "nosniff",
    "referrer-policy": lambda v: v == "same-origin",
}


@pytest.mark.parametrize("header", list(HEADERS))
def test_every_answer_carries_the_security_header(mesh, header):
    for path in PATHS:
        r = http_calls.get(mesh.url + path, timeout=10)
        assert header in r.headers and HEADERS[header](r.headers[header]), (path, r.status_code, r.headers)


def test_the_gateway_s_answers_are_not_sniffed(mesh):
    r = http_calls.get(mesh.url + "/v1/models", headers={"authorization": "Bearer mk-nonsense"})
    assert r.status_code == 401 and r.headers["x-content-type-options"] == "nosniff"


def no_store(r: httpx.Response) -> bool:
    return "no-store" in r.headers.get("cache-control", "")


def test_api_answers_that_show_a_secret_are_not_stored(mesh):
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    signed_up = api(mesh, "POST", "/api/signup", json={"email": email, "password": PASSWORD})
    logged_in = api(mesh, "POST", "/api/login", json={"email": email, "password": PASSWORD})
    token = logged_in.json()["management_token"]
    created = api(mesh, "POST", "/api/keys", token, json={"label": "no-store"})
    rotated = api(mesh, "POST", f"/api/keys/{created.json()['id']}/rotate", token, json={"grace_seconds": 0})
    topup = api(mesh, "POST", "/api/billing/topups", token, json={"amount_usd": "10", "provider": "bank_transfer"})
    changed = api(
        mesh, "POST", "/api/password", token, json={"current_password": PASSWORD, "new_password": "a new password 1"}
    )
    for r in (signed_up, logged_in, created, rotated, topup, changed):
        assert r.status_code in (200, 201) and no_store(r), (r.request.url, r.status_code, r.headers)
    listed = api(mesh, "GET", "/api/keys", changed.json()["management_token"])
    assert listed.status_code == 200 and not no_store(listed)  # shows no secret: cached as any answer


def test_dashboard_pages_that_show_a_secret_are_not_stored(mesh):
    """An action answers with a redirect (post/redirect/get); the page it leads to shows the secret once, and no
    page of a session is stored (Back after Log out asks the server again)."""
    with httpx.Client(base_url=mesh.url, timeout=30) as page:
        page.get("/signup")
        csrf = {"x-csrftoken": page.cookies["mesh_csrf"]}
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        signed_up = page.post("/signup", headers=csrf, data={"email": email, "password": PASSWORD})
        logged_in = page.post("/login", headers=csrf, data={"email": email, "password": PASSWORD})
        created = page.post("/keys", headers=csrf, data={"label": "dashboard no-store"})
        assert created.status_code == 303 and created.headers["location"].startswith("/keys?created=")
        shown = page.get(created.headers["location"])
        assert shown.status_code == 200 and 'id="secret"' in shown.text, shown.text[:500]
        key_id = next(  # the session cookie is the account's management token
            k["id"]
            for k in api(mesh, "GET", "/api/keys", page.cookies["mesh_session"]).json()["data"]
            if k["label"] == "dashboard no-store"
        )
        rotated = page.post(f"/keys/{key_id}/rotate", headers=csrf, data={"grace_seconds": "0"})
        assert rotated.status_code == 303 and f"/keys/{key_id}?rotated=" in rotated.headers["location"]
        shown_again = page.get(rotated.headers["location"])
        assert shown_again.status_code == 200 and 'id="secret"' in shown_again.text, shown_again.text[:500]
        for r in (signed_up, logged_in, shown, shown_again, page.get("/keys"), page.get("/billing")):
            assert no_store(r), (r.request.url, r.status_code, r.headers)


def test_the_docs_page_and_the_dashboard_work_under_their_policy(browser, mesh):  # noqa: F811
    """Swagger UI's scripts (served by Mesh) run with the CSP on, and no page reports a blocked resource."""
    context = browser.new_context()
    try:
        tab = context.new_page()
        blocked: list[str] = []
        tab.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
        answer = tab.goto(mesh.url + "/schema")
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        tab.wait_for_selector("#swagger-container .swagger-ui", timeout=15_000)  # drawn by Swagger UI's scripts
        tab.goto(mesh.url + "/signup")
        tab.fill("input[name=email]", f"{uuid.uuid4().hex[:8]}@example.com")
        tab.fill("input[name=password]", PASSWORD)
        tab.click("button[type=submit]")
        tab.wait_for_url("**/keys", timeout=15_000)
        assert blocked == []
    finally:
        context.close()


def test_health_tells_anyone_the_status_and_only_the_operator_the_details(mesh):
    public = http_calls.get(mesh.url + "/health", timeout=10)
    assert public.status_code == 200 and public.json() == {"status": "ok"}
    detailed = mesh.health()
    body = detailed.json()
    assert detailed.status_code == 200 and body["status"] == "ok"
    assert {"nats", "postgres", "stream_head", "projections", "children", "quarantined"} <= set(body)
    assert all(child["pid"] for child in body["children"]) and body["children"]
    wrong = http_calls.get(mesh.url + "/health", headers={"authorization": "Bearer mo-not-the-token"}, timeout=10)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    assert "pid" not in wrong.text
