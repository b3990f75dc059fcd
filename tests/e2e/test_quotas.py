"""Sign-up modes (MESH_SIGNUP), invite codes, per-account quotas, the log's size limit and a key's history a
page at a time, against a real `mesh up`."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import nats
import pytest

from tests import http_calls
from tests.e2e.conftest import SHARED_ADDRESS_LIMITS, events_after, own_mesh
from tests.e2e.test_dashboard import chromium
from tests.e2e.test_hostile import refused
from tests.e2e.test_walking_skeleton import api, sign_up, stream_head


@pytest.fixture
def browser():
    """One per test: the other tests of this module call asyncio.run(), which fails while Playwright is open."""
    with chromium() as launched:
        yield launched


PASSWORD = "correct horse battery"
MAX_KEYS, MAX_TEMPLATES, MAX_VERSIONS = 2, 2, 3


@pytest.fixture(scope="module")
def invite_mesh(tmp_path_factory, mesh_config):
    with own_mesh(
        tmp_path_factory, mesh_config, "invite-mesh", {**SHARED_ADDRESS_LIMITS, "MESH_SIGNUP": "invite"}
    ) as process:
        yield process


@pytest.fixture(scope="module")
def quota_mesh(tmp_path_factory, mesh_config):
    quotas = {
        "MESH_QUOTA_KEYS": str(MAX_KEYS),
        "MESH_QUOTA_TEMPLATES": str(MAX_TEMPLATES),
        "MESH_QUOTA_TEMPLATE_VERSIONS": str(MAX_VERSIONS),
    }
    with own_mesh(tmp_path_factory, mesh_config, "quota-mesh", {**SHARED_ADDRESS_LIMITS, **quotas}) as process:
        yield process


def invite(mesh, **body) -> dict:
    r = api(mesh, "POST", "/admin/invites", mesh.operator_token, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def signup(mesh, code: str | None = None, email: str | None = None) -> httpx.Response:
    body = {"email": email or f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
    if code is not None:
        body["invite_code"] = code
    return api(mesh, "POST", "/api/signup", json=body)


def new_account(mesh) -> str:
    """A new account's management token."""
    return sign_up(mesh)[1]


def test_invite_mode_needs_an_unused_unexpired_code(invite_mesh):
    mesh = invite_mesh
    before = stream_head(mesh)
    refused(signup(mesh), 403, "invite_required")
    refused(signup(mesh, "mi-not-a-code"), 403, "invite_invalid")
    assert events_after(mesh, before) == []  # a refusal records nothing

    made = invite(mesh)
    assert made["code"].startswith("mi-") and made["code"].startswith(made["prefix"]) and made["used_by"] is None
    first = signup(mesh, made["code"])
    assert first.status_code == 201, first.text
    error = refused(signup(mesh, made["code"]), 403, "invite_invalid")
    assert "already used" in error["message"]

    soon = invite(mesh, expires_at=(datetime.now(timezone.utc) + timedelta(seconds=1)).isoformat())
    time.sleep(1.2)
    assert "expired" in refused(signup(mesh, soon["code"]), 403, "invite_invalid")["message"]

    listed = api(mesh, "GET", "/admin/invites", mesh.operator_token).json()["data"]
    by_id = {i["id"]: i for i in listed}
    assert by_id[made["id"]]["used_by"] == first.json()["account_id"] and by_id[made["id"]]["used_at"]
    assert by_id[soon["id"]]["used_by"] is None and by_id[soon["id"]]["expires_at"]
    assert "code" not in json.dumps(listed).replace('"code": null', "") and made["code"] not in json.dumps(listed)
    token = first.json()["management_token"]
    assert api(mesh, "GET", "/admin/invites", token).status_code == 403  # operators only


def test_one_code_admits_one_account_even_when_two_sign_up_with_it_at_once(invite_mesh):
    mesh = invite_mesh
    code = invite(mesh)["code"]

    async def both() -> list[int]:
        async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
            bodies = [
                {"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD, "invite_code": code}
                for _ in range(4)
            ]
            answers = await asyncio.gather(*(client.post("/api/signup", json=b) for b in bodies))
            return sorted(a.status_code for a in answers)

    assert asyncio.run(both()) == [201, 403, 403, 403]


def test_the_signup_page_takes_an_invite_code_and_says_when_it_is_not_valid(browser, invite_mesh):
    from playwright.sync_api import expect

    context = browser.new_context(base_url=invite_mesh.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        page.goto("/signup")
        page.get_by_label("Email").fill(f"{uuid.uuid4().hex[:8]}@example.com")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Invite code").fill("mi-not-a-code")
        page.get_by_role("button", name="Sign up").click()
        expect(page.get_by_role("alert")).to_contain_text("invite code is not valid")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_label("Invite code").fill(invite(invite_mesh)["code"])
        page.get_by_role("button", name="Sign up").click()
        page.wait_for_url(re.compile(r"/keys$"))
    finally:
        context.close()


def test_the_key_quota_refuses_one_more_key_and_counts_parallel_creates_once(quota_mesh):
    mesh = quota_mesh
    token = new_account(mesh)
    keys = [api(mesh, "POST", "/api/keys", token, json={"label": f"k{i}"}) for i in range(MAX_KEYS)]
    assert [k.status_code for k in keys] == [201] * MAX_KEYS
    before = stream_head(mesh)
    error = refused(api(mesh, "POST", "/api/keys", token, json={"label": "one more"}), 403, "key_quota_exceeded")
    assert f"({MAX_KEYS})" in error["message"] and error["type"] == "permission_error"
    assert events_after(mesh, before) == []
    assert api(mesh, "POST", f"/api/keys/{keys[0].json()['id']}/revoke", token).status_code == 200
    assert api(mesh, "POST", "/api/keys", token, json={"label": "in its place"}).status_code == 201

    fresh = new_account(mesh)

    async def at_once() -> list[int]:
        async with httpx.AsyncClient(base_url=mesh.url, timeout=30) as client:
            headers = {"authorization": f"Bearer {fresh}"}
            answers = await asyncio.gather(
                *(client.post("/api/keys", json={"label": f"p{i}"}, headers=headers) for i in range(6))
            )
            return sorted(a.status_code for a in answers)

    assert asyncio.run(at_once()) == [201] * MAX_KEYS + [403] * (6 - MAX_KEYS)
    assert len(api(mesh, "GET", "/api/keys", fresh).json()["data"]) == MAX_KEYS


def template_body(name: str, content: str = "Hi {{ who }}") -> dict:
    return {"name": name, "messages": [{"role": "user", "content": content}]}


def test_the_template_and_version_quotas_refuse_one_more(quota_mesh):
    mesh = quota_mesh
    token = new_account(mesh)
    made = [api(mesh, "POST", "/api/templates", token, json=template_body(f"t{i}")) for i in range(MAX_TEMPLATES)]
    assert [t.status_code for t in made] == [201] * MAX_TEMPLATES
    error = refused(api(mesh, "POST", "/api/templates", token, json=template_body("extra")), 403)
    assert error["code"] == "template_quota_exceeded" and f"({MAX_TEMPLATES})" in error["message"]
    first = made[0].json()["id"]
    assert api(mesh, "DELETE", f"/api/templates/{first}", token).status_code in (200, 204)  # archived
    assert api(mesh, "POST", "/api/templates", token, json=template_body("extra")).status_code == 201

    second = made[1].json()["id"]
    for version in range(2, MAX_VERSIONS + 1):
        saved = api(mesh, "PUT", f"/api/templates/{second}", token, json=template_body("t1", f"v{version}"))
        assert saved.status_code == 200 and saved.json()["version"] == version, saved.text
    before = stream_head(mesh)
    over = api(mesh, "PUT", f"/api/templates/{second}", token, json=template_body("t1", "one too many"))
    error = refused(over, 403, "template_version_quota_exceeded")
    assert f"({MAX_VERSIONS})" in error["message"]
    assert events_after(mesh, before) == []


def test_a_keys_history_comes_a_page_at_a_time_from_the_read_model(quota_mesh):
    mesh = quota_mesh
    token = new_account(mesh)
    key = api(mesh, "POST", "/api/keys", token, json={"label": "paged"}).json()
    for i in range(54):
        assert api(mesh, "PATCH", f"/api/keys/{key['id']}", token, json={"label": f"l{i}"}).status_code == 200
    first = api(mesh, "GET", f"/api/keys/{key['id']}/events?limit=20", token)
    assert first.status_code == 200, first.text
    page = first.json()
    assert [e["version"] for e in page["data"]] == list(range(55, 35, -1))  # newest first
    assert page["data"][0]["details"] == {"label": "l53"} and page["next_cursor"] and page["as_of"]["position"]
    seen = page["data"]
    while page["next_cursor"]:
        page = api(mesh, "GET", f"/api/keys/{key['id']}/events?limit=20&cursor={page['next_cursor']}", token).json()
        seen += page["data"]
    assert [e["version"] for e in seen] == list(range(55, 0, -1))
    assert seen[-1]["type"] == "key.created" and "hash" not in json.dumps(seen)
    refused(api(mesh, "GET", f"/api/keys/{key['id']}/events?cursor=nope", token), 400, "invalid_request")
    refused(api(mesh, "GET", f"/api/keys/{key['id']}/events?limit=501", token), 400)

    shown = http_calls.get(f"{mesh.url}/keys/{key['id']}", cookies={"mesh_session": token})
    assert shown.status_code == 200
    assert shown.text.count("key.relabeled") == 50 and f"/keys/{key['id']}?cursor=6" in shown.text
    older = http_calls.get(f"{mesh.url}/keys/{key['id']}?cursor=6", cookies={"mesh_session": token})
    assert "key.created" in older.text and "?cursor=" not in older.text


@pytest.fixture(scope="module")
def closed_mesh(tmp_path_factory, mesh_config):
    with own_mesh(tmp_path_factory, mesh_config, "closed-mesh", {"MESH_SIGNUP": "closed"}) as process:
        yield process


def test_closed_signup_refuses_everyone_and_the_page_says_so(closed_mesh):
    mesh = closed_mesh
    before = stream_head(mesh)
    error = refused(signup(mesh), 403, "signup_closed")
    assert "closed" in error["message"]
    refused(signup(mesh, invite(mesh)["code"]), 403, "signup_closed")  # an invite does not open it
    page = http_calls.get(mesh.url + "/signup")
    assert "Sign-up is closed" in page.text and 'name="password"' not in page.text
    assert [t for t in events_after(mesh, before) if t != "invite.created"] == []


LOG_LIMIT = 1024**2


@pytest.fixture(scope="module")
def small_log_mesh(tmp_path_factory, mesh_config):
    """A log of 1 MiB (the least MESH_STREAM_MAX_BYTES takes)."""
    with own_mesh(
        tmp_path_factory, mesh_config, "small-log-mesh", {"MESH_STREAM_MAX_BYTES": str(LOG_LIMIT)}
    ) as process:
        yield process


def stream_config(mesh) -> dict:
    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]

    async def read() -> dict:
        nc = await nats.connect(nats_url)
        try:
            return (await nc.jetstream().stream_info("MESH")).config.as_dict()
        finally:
            await nc.close()

    return asyncio.run(read())


def test_the_log_has_a_size_limit_and_health_warns_near_it(small_log_mesh):
    mesh = small_log_mesh
    assert stream_config(mesh)["max_bytes"] == LOG_LIMIT
    health = mesh.health().json()
    assert health["stream_max_bytes"] == LOG_LIMIT and health["warnings"] == [] and health["status"] == "ok"
    _, token = sign_up(mesh)
    template = api(mesh, "POST", "/api/templates", token, json=template_body("big")).json()
    while health["stream_bytes"] < 0.8 * LOG_LIMIT:  # versions of about 60 KB each: never past the limit
        body = template_body("big", "x" * 60_000)
        assert api(mesh, "PUT", f"/api/templates/{template['id']}", token, json=body).status_code == 200
        health = mesh.health().json()
    response = mesh.health()
    assert response.status_code == 200 and response.json()["status"] == "degraded"
    assert http_calls.get(mesh.url + "/health").json() == {"status": "degraded"}  # the warning is the operator's
    (warning,) = response.json()["warnings"]
    assert "MESH_STREAM_MAX_BYTES" in warning and f"of its {LOG_LIMIT} bytes" in warning
