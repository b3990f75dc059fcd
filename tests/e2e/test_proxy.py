"""Mesh behind a TLS proxy (MESH_TRUSTED_PROXIES=127.0.0.1) over real HTTP: the proxy's X-Forwarded-Proto makes
cookies Secure and adds HSTS, its X-Forwarded-For is the address the attempt limits count; a peer that is not
a trusted proxy (this machine's 127.0.0.2) sends the same headers and they are ignored."""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import MeshProcess

PASSWORD = "correct horse battery"
FAILURES_PER_ADDRESS = 50  # MESH_LOGIN_FAILURES_PER_ADDRESS's default: the one a real deployment has
FAILURES_PER_EMAIL = 10  # MESH_LOGIN_FAILURES_PER_EMAIL's default
UNTRUSTED_PEER = "127.0.0.2"  # loopback too, but not in MESH_TRUSTED_PROXIES


@pytest.fixture(scope="module")
def proxied(tmp_path_factory, mesh_config):
    mesh = MeshProcess(
        tmp_path_factory.mktemp("proxied") / "data", mesh_config, env={"MESH_TRUSTED_PROXIES": "127.0.0.1"}
    )
    mesh.start()
    yield mesh
    mesh.stop()


def client(mesh: MeshProcess, peer: str = "127.0.0.1") -> httpx.Client:
    """A client connecting from `peer` (the proxy, or someone else on this machine)."""
    return httpx.Client(
        base_url=mesh.url, transport=httpx.HTTPTransport(local_address=peer), timeout=30, follow_redirects=False
    )


def via_proxy(client_address: str, scheme: str = "https") -> dict[str, str]:
    """What a TLS proxy adds to the request it forwards."""
    return {"x-forwarded-for": client_address, "x-forwarded-proto": scheme}


def new_email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.com"


def cookies(response: httpx.Response) -> dict[str, str]:
    """Set-Cookie by cookie name, the whole header (its attributes included)."""
    return {h.split("=", 1)[0]: h for h in response.headers.get_list("set-cookie")}


def secure(set_cookie: str) -> bool:
    return any(part.strip().lower() == "secure" for part in set_cookie.split(";"))


def dashboard_sign_up(http: httpx.Client, headers: dict[str, str]) -> tuple[httpx.Response, httpx.Response]:
    """GET /signup (the CSRF cookie), then POST /signup with it: both answers. The cookie goes back by hand:
    a Secure one is never sent over the http this test speaks to the proxy's side."""
    form = http.get("/signup", headers=headers)
    assert form.status_code == 200, form.text
    token = re.match(r"mesh_csrf=([^;]*)", cookies(form)["mesh_csrf"]).group(1)
    posted = http.post(
        "/signup",
        headers={**headers, "cookie": f"mesh_csrf={token}", "x-csrftoken": token},
        data={"email": new_email(), "password": PASSWORD},
    )
    assert posted.status_code in (302, 303), posted.text
    return form, posted


def test_forwarded_https_makes_cookies_secure_and_sends_hsts_from_a_trusted_proxy_only(proxied):
    with client(proxied) as http:
        form, posted = dashboard_sign_up(http, via_proxy("198.51.100.7"))
        assert secure(cookies(form)["mesh_csrf"]), form.headers
        assert secure(cookies(posted)["mesh_session"]), posted.headers
        for answer in (form, posted):
            assert re.fullmatch(r"max-age=\d{7,}", answer.headers["strict-transport-security"]), answer.headers
        body = {"email": new_email(), "password": PASSWORD}
        signed_up = http.post("/api/signup", headers=via_proxy("198.51.100.7"), json=body)
        assert signed_up.status_code == 201 and "strict-transport-security" in signed_up.headers
        # the proxy reached over plain http: no HSTS, no Secure
        form, posted = dashboard_sign_up(http, via_proxy("198.51.100.7", "http"))
        assert not secure(cookies(form)["mesh_csrf"]) and not secure(cookies(posted)["mesh_session"])
        assert "strict-transport-security" not in posted.headers
    with client(proxied, UNTRUSTED_PEER) as http:  # the same headers from a peer that is not a trusted proxy
        form, posted = dashboard_sign_up(http, via_proxy("198.51.100.8"))
        assert not secure(cookies(form)["mesh_csrf"]) and not secure(cookies(posted)["mesh_session"])
        assert "strict-transport-security" not in form.headers and "strict-transport-security" not in posted.headers


def failed_login(http: httpx.Client, client_address: str, peer_headers: dict[str, str] | None = None) -> int:
    """One wrong password for a new email (so only the per-address limit can refuse it): the status."""
    headers = peer_headers if peer_headers is not None else via_proxy(client_address)
    r = http.post("/api/login", headers=headers, json={"email": new_email(), "password": "wrong password"})
    return r.status_code


def test_failed_logins_count_for_the_forwarded_client_address_not_the_proxy(proxied):
    locked, other = "203.0.113.10", "203.0.113.11"
    with client(proxied) as http:
        statuses = [failed_login(http, locked) for _ in range(60)]
        assert statuses == [401] * FAILURES_PER_ADDRESS + [429] * (60 - FAILURES_PER_ADDRESS)
        # the proxy's other clients are not locked out with it
        assert failed_login(http, other) == 401
        email = new_email()
        signed_up = http.post("/api/signup", headers=via_proxy(other), json={"email": email, "password": PASSWORD})
        assert signed_up.status_code == 201, signed_up.text
        assert (
            http.post("/api/login", headers=via_proxy(other), json={"email": email, "password": PASSWORD}).status_code
            == 200
        )
        # the right-most address not itself a trusted proxy is the client's: what a client wrote before it
        # (here the locked address, as a forger would) is not believed; a trusted hop after it is skipped
        assert failed_login(http, "", {"x-forwarded-for": f"{locked}, 203.0.113.12"}) == 401
        assert failed_login(http, "", {"x-forwarded-for": f"203.0.113.13, {locked}, 127.0.0.1"}) == 429
    with client(proxied, UNTRUSTED_PEER) as http:
        assert failed_login(http, locked) == 401  # not a proxy: counted as 127.0.0.2, whatever it claims


def test_successful_logins_never_use_up_a_limit_even_at_once(proxied):
    """More right passwords for one account, checked at the same time, than its limit of failed logins: all in."""
    email = new_email()
    with client(proxied) as http:
        r = http.post("/api/signup", headers=via_proxy("203.0.113.20"), json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text

        def log_in(i: int) -> int:
            with client(proxied) as own:
                body = {"email": email, "password": PASSWORD}
                return own.post("/api/login", headers=via_proxy("203.0.113.21"), json=body).status_code

        with ThreadPoolExecutor(FAILURES_PER_EMAIL + 4) as pool:
            statuses = list(pool.map(log_in, range(FAILURES_PER_EMAIL + 4)))
        assert statuses == [200] * (FAILURES_PER_EMAIL + 4)
        # nor did they count afterwards: the account still takes its full number of wrong passwords
        wrong = {"email": email, "password": "wrong password"}
        statuses = [
            http.post("/api/login", headers=via_proxy("203.0.113.22"), json=wrong).status_code
            for _ in range(FAILURES_PER_EMAIL + 1)
        ]
        assert statuses == [401] * FAILURES_PER_EMAIL + [429]
