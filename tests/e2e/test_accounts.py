"""Accounts over real HTTP against `mesh up`: attempt limits (429 with Retry-After), log-out, password change,
sliding session expiry, and no secret in the log."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from domain.credentials import MANAGEMENT_TOKEN_PREFIX
from tests.conftest import TEST_KDF
from tests.e2e.conftest import MeshProcess, stored_events
from tests.e2e.test_walking_skeleton import api

PASSWORD = "correct horse battery"
SESSION_SECONDS = 6


def new_email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.com"


def assert_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["type"]
    return error


@pytest.fixture(scope="module")
def strict_mesh(tmp_path_factory, mesh_config):
    """A Mesh of its own with tight per-address limits and six-second sessions."""
    process = MeshProcess(
        tmp_path_factory.mktemp("strict") / "data",
        mesh_config,
        env={
            "MESH_SESSION_DAYS": str(SESSION_SECONDS / 86400),
            "MESH_SIGNUPS_PER_ADDRESS": "4",
            "MESH_LOGIN_FAILURES_PER_ADDRESS": "3",
            "MESH_LOGIN_WINDOW_SECONDS": "600",
        },
    )
    process.start()
    yield process
    process.stop()


def test_thirty_wrong_passwords_get_429_long_before_the_thirtieth(mesh):
    email = new_email()
    assert api(mesh, "POST", "/api/signup", json={"email": email, "password": PASSWORD}).status_code == 201
    statuses = []
    for _ in range(30):
        r = api(mesh, "POST", "/api/login", json={"email": email, "password": "wrong password"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            break
    assert statuses == [401] * 10 + [429]
    error = assert_error(r, 429, "rate_limited")
    assert 0 < int(r.headers["retry-after"]) <= 900 and "try again in" in error["message"]
    # the right password waits too (the guesses were against it), and so does an other spelling of the email
    r = api(mesh, "POST", "/api/login", json={"email": email.upper(), "password": PASSWORD})
    assert_error(r, 429, "rate_limited")
    # other accounts are not affected
    other = new_email()
    api(mesh, "POST", "/api/signup", json={"email": other, "password": PASSWORD})
    assert api(mesh, "POST", "/api/login", json={"email": other, "password": PASSWORD}).status_code == 200


def test_unknown_emails_are_limited_like_known_ones(mesh):
    email = new_email()
    statuses = [
        api(mesh, "POST", "/api/login", json={"email": email, "password": "wrong password"}).status_code
        for _ in range(11)
    ]
    assert statuses == [401] * 10 + [429]


def test_password_bounds_are_refused_with_a_clear_400(mesh):
    for password, allowed in (("x" * 9, "10 to 1024"), ("x" * 1025, "10 to 1024")):
        r = api(mesh, "POST", "/api/signup", json={"email": new_email(), "password": password})
        error = assert_error(r, 400, "invalid_password")
        assert allowed in error["message"] and password not in error["message"]
    r = api(mesh, "POST", "/api/login", json={"email": new_email(), "password": "x" * 1025})
    assert_error(r, 400, "invalid_password")


def test_passwords_are_hashed_at_the_cost_the_server_was_given(mesh):
    """MESH_PASSWORD_KDF_LOG_N reaches the sign-up: the stored hash names that cost (and not the password)."""
    email = new_email()
    signed_up = api(mesh, "POST", "/api/signup", json={"email": email, "password": PASSWORD})
    assert signed_up.status_code == 201, signed_up.text
    created = [
        data for topic, data in stored_events(mesh, 0) if topic == "account.registered" and email.encode() in data
    ]
    assert len(created) == 1 and f"scrypt$ln={TEST_KDF.log_n},r=8,p=1$".encode() in created[0]
    assert PASSWORD.encode() not in created[0]


def test_logout_revokes_only_the_token_presented(mesh):
    email = new_email()
    first = api(mesh, "POST", "/api/signup", json={"email": email, "password": PASSWORD}).json()["management_token"]
    second = api(mesh, "POST", "/api/login", json={"email": email, "password": PASSWORD}).json()["management_token"]
    r = api(mesh, "POST", "/api/logout", first)
    assert r.status_code == 204, r.text
    assert_error(api(mesh, "GET", "/api/keys", first), 401, "unauthorized")
    assert_error(api(mesh, "POST", "/api/logout", first), 401, "unauthorized")
    assert api(mesh, "GET", "/api/keys", second).status_code == 200


def test_a_password_change_revokes_every_token_and_returns_a_fresh_one(mesh):
    email = new_email()
    signed_up = api(mesh, "POST", "/api/signup", json={"email": email, "password": PASSWORD}).json()
    first, account_id = signed_up["management_token"], signed_up["account_id"]
    second = api(mesh, "POST", "/api/login", json={"email": email, "password": PASSWORD}).json()["management_token"]

    r = api(
        mesh,
        "POST",
        "/api/password",
        first,
        json={"current_password": "not it at all", "new_password": "a brand new password"},
    )
    assert_error(r, 403, "wrong_password")
    r = api(mesh, "POST", "/api/password", first, json={"current_password": PASSWORD, "new_password": "short"})
    assert_error(r, 400, "invalid_password")
    assert api(mesh, "GET", "/api/keys", first).status_code == 200  # refusals changed nothing

    r = api(
        mesh,
        "POST",
        "/api/password",
        first,
        json={"current_password": PASSWORD, "new_password": "a brand new password"},
    )
    assert r.status_code == 200, r.text
    fresh = r.json()
    assert fresh["account_id"] == account_id and fresh["management_token"] not in (first, second)
    for old in (first, second):
        assert_error(api(mesh, "GET", "/api/keys", old), 401, "unauthorized")
    assert api(mesh, "GET", "/api/keys", fresh["management_token"]).status_code == 200
    r = api(mesh, "POST", "/api/login", json={"email": email, "password": PASSWORD})
    assert_error(r, 401, "bad_credentials")
    r = api(mesh, "POST", "/api/login", json={"email": email, "password": "a brand new password"})
    assert r.status_code == 200 and r.json()["account_id"] == account_id


def test_a_token_used_keeps_living_and_an_idle_one_expires(strict_mesh):
    signed_up = api(strict_mesh, "POST", "/api/signup", json={"email": new_email(), "password": PASSWORD})
    assert signed_up.status_code == 201, signed_up.text
    busy = signed_up.json()["management_token"]
    email = new_email()
    api(strict_mesh, "POST", "/api/signup", json={"email": email, "password": PASSWORD})
    idle = api(strict_mesh, "POST", "/api/login", json={"email": email, "password": PASSWORD}).json()
    started = time.monotonic()
    while time.monotonic() - started < 2 * SESSION_SECONDS:  # twice the session, used every second
        assert api(strict_mesh, "GET", "/api/keys", busy).status_code == 200
        time.sleep(1)
    error = assert_error(api(strict_mesh, "GET", "/api/keys", idle["management_token"]), 401, "unauthorized")
    assert "expired" in error["message"]
    time.sleep(SESSION_SECONDS + 1)
    assert_error(api(strict_mesh, "GET", "/api/keys", busy), 401, "unauthorized")


def test_limits_per_client_address(strict_mesh):
    r = None
    for _ in range(5):  # MESH_SIGNUPS_PER_ADDRESS=4, and the session test above made two
        r = api(strict_mesh, "POST", "/api/signup", json={"email": new_email(), "password": PASSWORD})
        if r.status_code == 429:
            break
    error = assert_error(r, 429, "rate_limited")
    assert "sign-ups from this address" in error["message"] and int(r.headers["retry-after"]) > 0
    statuses = [
        api(strict_mesh, "POST", "/api/login", json={"email": new_email(), "password": "wrong password"}).status_code
        for _ in range(4)
    ]
    assert statuses == [401, 401, 401, 429]  # MESH_LOGIN_FAILURES_PER_ADDRESS=3, whatever the emails


# a management token anywhere, not the prefix's three characters inside another secret (the operator token's)
ANY_MANAGEMENT_TOKEN = re.compile(rf"(?<![\w-]){re.escape(MANAGEMENT_TOKEN_PREFIX)}[\w-]{{20,}}")


def test_no_password_or_token_reaches_the_log(mesh, strict_mesh):
    email = new_email()
    first = api(mesh, "POST", "/api/signup", json={"email": email, "password": "a secret password 42"}).json()
    api(mesh, "POST", "/api/login", json={"email": email, "password": "a wrong secret 42"})
    fresh = api(
        mesh,
        "POST",
        "/api/password",
        first["management_token"],
        json={"current_password": "a secret password 42", "new_password": "another secret 42"},
    ).json()
    api(mesh, "POST", "/api/logout", fresh["management_token"])
    secrets = [
        "a secret password 42",
        "a wrong secret 42",
        "another secret 42",
        first["management_token"],
        fresh["management_token"],
        PASSWORD,
    ]
    for process in (mesh, strict_mesh):
        log = process.output()
        assert [s for s in secrets if s in log] == [] and not ANY_MANAGEMENT_TOKEN.search(log)
