"""Account webhooks end to end: a receiver in the test gets `balance.low` once per crossing with a valid
signature, is retried after a 500 and after Mesh restarts, and a private address is refused by default."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from domain.webhook import verify_signature
from tests import http_calls
from tests.e2e.conftest import MeshProcess, own_mesh

WAIT = 30  # seconds a delivery may take to arrive (the worker looks every 0.25 s; retries wait 0.5 s, 1 s, ...)
SETTINGS = {
    "MESH_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on 127.0.0.1
    "MESH_WEBHOOK_RETRY_BASE_SECONDS": "0.5",
    "MESH_REFUSALS_FLUSH_SECONDS": "1",  # usage.refused (key.cap_reached comes from it) within a second
}


class Receiver:
    """An HTTP server that records each POST and answers `status` (settable while it runs)."""

    def __init__(self):
        self.status = 200
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, event_type: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if json.loads(b)["type"] == event_type]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def pricey_config(tmp_path_factory, fake_openai):
    """A model whose answer (7 tokens) costs 0.7 USD: a few requests move a balance across a threshold."""
    path = tmp_path_factory.mktemp("webhooks-config") / "mesh.toml"
    path.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{fake_openai.url}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "acme/pricey"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0"
completion_usd_per_1k = "100"
max_output_tokens = 8
""")
    return path


@pytest.fixture(scope="module")
def hooks_mesh(tmp_path_factory, pricey_config):
    with own_mesh(tmp_path_factory, pricey_config, "webhooks", SETTINGS) as process:
        yield process


def account(mesh: MeshProcess, usd: str) -> tuple[str, dict[str, str]]:
    signed_up = http_calls.post(
        mesh.url + "/api/signup",
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"},
        timeout=30,
    ).json()
    grant(mesh, signed_up["account_id"], usd)
    return signed_up["account_id"], {"authorization": f"Bearer {signed_up['management_token']}"}


def grant(mesh: MeshProcess, account_id: str, usd: str) -> None:
    granted = http_calls.post(
        f"{mesh.url}/admin/accounts/{account_id}/credits",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"amount_usd": usd, "reason": "test"},
        timeout=30,
    )
    assert granted.status_code == 201, granted.text


def spend(mesh: MeshProcess, auth: dict[str, str]) -> None:
    key = http_calls.post(mesh.url + "/api/keys", headers=auth, json={"label": "k"}, timeout=30).json()["key"]
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="acme/pricey", messages=[{"role": "user", "content": "hi"}], max_tokens=8)


def balance(mesh: MeshProcess, auth: dict[str, str]) -> float:
    return float(http_calls.get(mesh.url + "/api/billing/balance", headers=auth, timeout=30).json()["balance_usd"])


def until(condition, timeout: float = WAIT, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def register(mesh: MeshProcess, auth: dict[str, str], url: str, **fields) -> dict:
    created = http_calls.post(mesh.url + "/api/webhooks", headers=auth, json={"url": url, **fields}, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()


def test_balance_low_once_per_crossing_signed(hooks_mesh, receiver):
    account_id, auth = account(hooks_mesh, "2")
    endpoint = register(hooks_mesh, auth, receiver.url, events=["balance.low"], balance_low_threshold_usd="1.5")
    assert endpoint["secret"].startswith("whsec_")
    assert "secret" not in http_calls.get(f"{hooks_mesh.url}/api/webhooks/{endpoint['id']}", headers=auth).json()

    spend(hooks_mesh, auth)  # 2 -> 1.3: the first crossing
    until(lambda: receiver.of_type("balance.low"), what="the first balance.low")
    spend(hooks_mesh, auth)  # 1.3 -> 0.6: still below, no new crossing
    until(lambda: balance(hooks_mesh, auth) < 1, what="the second request billed")
    grant(hooks_mesh, account_id, "2")  # 2.6: above again, re-armed
    until(lambda: balance(hooks_mesh, auth) > 2, what="the grant")
    time.sleep(1)  # the watcher sees the balance above (it looks every 0.25 s)
    spend(hooks_mesh, auth)  # 1.9
    spend(hooks_mesh, auth)  # 1.2: the second crossing
    until(lambda: len(receiver.of_type("balance.low")) >= 2, what="the second balance.low")
    time.sleep(2)
    lows = receiver.of_type("balance.low")
    assert len(lows) == 2, [b for _, b in lows]

    for headers, body in lows:
        assert verify_signature(endpoint["secret"], headers["mesh-signature"], body, int(time.time()))
        assert not verify_signature(endpoint["secret"], headers["mesh-signature"], body + b" ", int(time.time()))
        payload = json.loads(body)
        assert payload["account_id"] == account_id
        assert headers["mesh-event-id"] == payload["id"]
        assert float(payload["data"]["balance_usd"]) < 1.5 and payload["data"]["threshold_usd"].startswith("1.5")
    assert len({json.loads(b)["id"] for _, b in lows}) == 2

    deliveries = http_calls.get(f"{hooks_mesh.url}/api/webhooks/{endpoint['id']}/deliveries", headers=auth).json()[
        "data"
    ]
    assert [d["status"] for d in deliveries] == ["delivered", "delivered"]
    assert all(d["attempts"][0]["status_code"] == 200 for d in deliveries)


def test_retried_after_500_and_resent_by_hand(hooks_mesh, receiver):
    receiver.status = 500
    account_id, auth = account(hooks_mesh, "1")
    by_name = receiver.url.replace("127.0.0.1", "localhost")  # resolved at each attempt, sent to that address
    endpoint = register(hooks_mesh, auth, by_name, events=["balance.low"], balance_low_threshold_usd="5")
    until(lambda: len(receiver.received) >= 2, what="a retry after the 500")
    receiver.status = 204
    until(lambda: any(d["status"] == "delivered" for d in deliveries_of(hooks_mesh, auth, endpoint)), what="delivery")
    [delivery] = deliveries_of(hooks_mesh, auth, endpoint)
    codes = [a["status_code"] for a in delivery["attempts"]]
    assert codes[:2] == [500, 500] and codes[-1] == 204, codes
    assert len({json.loads(b)["id"] for _, b in receiver.received}) == 1  # every attempt is the same event
    assert all("the endpoint answered 500" == a["error"] for a in delivery["attempts"][:-1])
    assert receiver.received[0][0]["host"] == by_name.split("/")[2]  # the Host header names the host, not the address

    sent = len(receiver.received)
    resent = http_calls.post(
        f"{hooks_mesh.url}/api/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/resend", headers=auth
    )
    assert resent.status_code == 202, resent.text
    until(lambda: len(receiver.received) > sent, what="the resend")
    until(lambda: deliveries_of(hooks_mesh, auth, endpoint)[0]["attempts"][-1]["manual"], what="the manual attempt")


def deliveries_of(mesh: MeshProcess, auth: dict[str, str], endpoint: dict) -> list[dict]:
    answer = http_calls.get(f"{mesh.url}/api/webhooks/{endpoint['id']}/deliveries", headers=auth, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def test_pending_delivery_survives_a_restart(tmp_path_factory, pricey_config, receiver):
    receiver.status = 503
    with own_mesh(tmp_path_factory, pricey_config, "webhooks-restart", SETTINGS) as process:
        _, auth = account(process, "1")
        endpoint = register(process, auth, receiver.url, events=["balance.low"], balance_low_threshold_usd="5")
        until(lambda: receiver.received, what="a first attempt")
        process.stop()
        receiver.status = 200
        failed = len(receiver.received)
        time.sleep(1)
        assert len(receiver.received) == failed  # nothing sends while Mesh is down
        process.start()
        until(lambda: deliveries_of(process, auth, endpoint)[0]["status"] == "delivered", what="after the restart")
        assert receiver.received[-1][1] == receiver.received[0][1]  # the same payload, byte for byte
        time.sleep(1)
        assert len(receiver.received) == failed + 1  # delivered once after the restart, not again


def test_private_address_refused_by_default(mesh):
    _, auth = account(mesh, "1")
    for url in ("http://127.0.0.1:9/hook", "https://127.0.0.1/hook", "https://10.1.2.3/hook", "https://localhost/x"):
        refused = http_calls.post(
            mesh.url + "/api/webhooks", headers=auth, json={"url": url, "events": ["topup.succeeded"]}, timeout=30
        )
        assert refused.status_code == 400, (url, refused.text)
        error = refused.json()["error"]
        assert error["param"] == "url" and error["code"] == "invalid_webhook", error
    refused = http_calls.post(
        mesh.url + "/api/webhooks",
        headers=auth,
        json={"url": "https://127.0.0.1/hook", "events": ["topup.succeeded"]},
        timeout=30,
    ).json()["error"]
    assert "loopback" in refused["message"] and "MESH_WEBHOOK_ALLOW_PRIVATE" in refused["message"]
    assert http_calls.get(mesh.url + "/api/webhooks", headers=auth).json() == {"data": []}


def test_dashboard_page_adds_shows_secret_once_lists_attempts_and_resends(hooks_mesh, receiver):
    _, auth = account(hooks_mesh, "1")
    token = auth["authorization"].removeprefix("Bearer ")
    with httpx.Client(base_url=hooks_mesh.url, cookies={"mesh_session": token}, timeout=30) as browser:
        listing = browser.get("/webhooks")
        assert listing.status_code == 200 and 'aria-current="page">Webhooks' in listing.text
        csrf = re.search(r'name="_csrf_token" value="([^"]+)"', listing.text).group(1)
        refused = browser.post("/webhooks", data={"_csrf_token": csrf, "url": receiver.url, "events": ["balance.low"]})
        assert "balance.low needs balance_low_threshold_usd" in refused.text
        made = browser.post(
            "/webhooks",
            data={
                "_csrf_token": csrf,
                "url": receiver.url,
                "events": ["balance.low", "topup.failed"],
                "balance_low_threshold_usd": "5",
            },
        )
        assert made.status_code == 303 and made.headers["location"].startswith("/webhooks?created=")
        shown = browser.get(made.headers["location"])
        secret = re.search(r'<code id="secret">(whsec_[0-9a-f]+)</code>', shown.text).group(1)
        assert secret not in browser.get(made.headers["location"]).text  # once
        [endpoint] = http_calls.get(hooks_mesh.url + "/api/webhooks", headers=auth).json()["data"]
        until(
            lambda: (
                deliveries_of(hooks_mesh, auth, endpoint)
                and deliveries_of(hooks_mesh, auth, endpoint)[0]["status"] == "delivered"
            )
        )
        headers, body = receiver.received[-1]
        assert verify_signature(secret, headers["mesh-signature"], body, int(time.time()))

        page = browser.get(f"/webhooks/{endpoint['id']}")
        assert "balance.low" in page.text and "200, " in page.text
        [delivery] = deliveries_of(hooks_mesh, auth, endpoint)
        resent = browser.post(
            f"/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/resend", data={"_csrf_token": csrf}
        )
        assert resent.status_code == 303 and resent.headers["location"] == f"/webhooks/{endpoint['id']}"
        until(lambda: "(resent by hand)" in browser.get(f"/webhooks/{endpoint['id']}").text, what="the resend")
        removed = browser.post(f"/webhooks/{endpoint['id']}/remove", data={"_csrf_token": csrf})
        assert removed.status_code == 303
    assert http_calls.get(hooks_mesh.url + "/api/webhooks", headers=auth).json() == {"data": []}


def test_topup_and_key_cap_notifications_and_endpoint_changes(hooks_mesh, receiver):
    account_id, auth = account(hooks_mesh, "3")
    endpoint = register(hooks_mesh, auth, receiver.url, events=["topup.succeeded", "key.cap_reached"])

    topup = http_calls.post(
        hooks_mesh.url + "/api/billing/topups", headers=auth, json={"amount_usd": "10", "provider": "bank_transfer"}
    )
    assert topup.status_code == 201, topup.text
    confirmed = http_calls.post(
        f"{hooks_mesh.url}/admin/topups/{topup.json()['reference']}/confirm",
        headers={"authorization": f"Bearer {hooks_mesh.operator_token}"},
        json={},
    )
    assert confirmed.status_code == 200, confirmed.text
    until(lambda: receiver.of_type("topup.succeeded"), what="topup.succeeded")
    [(_, body)] = receiver.of_type("topup.succeeded")
    assert json.loads(body)["data"]["amount_usd"].startswith("10.") and json.loads(body)["account_id"] == account_id

    capped = http_calls.post(hooks_mesh.url + "/api/keys", headers=auth, json={"label": "c", "spend_cap_usd": "0.1"})
    client = openai.OpenAI(base_url=hooks_mesh.url + "/v1", api_key=capped.json()["key"], max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(
                model="acme/pricey", messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
        assert refused.value.status_code == 402
    until(lambda: receiver.of_type("key.cap_reached"), what="key.cap_reached")
    time.sleep(2)
    [(_, body)] = receiver.of_type("key.cap_reached")  # once, however many refusals
    assert json.loads(body)["data"]["key_id"] == capped.json()["id"]

    url = f"{hooks_mesh.url}/api/webhooks/{endpoint['id']}"
    bad = http_calls.patch(url, headers=auth, json={"events": ["balance.low"]}).json()["error"]
    assert bad["code"] == "invalid_webhook" and "balance_low_threshold_usd" in bad["message"], bad
    bad = http_calls.patch(url, headers=auth, json={"events": ["nope"]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "events[0]", bad.text
    changed = http_calls.patch(url, headers=auth, json={"events": ["balance.low"], "balance_low_threshold_usd": "0.5"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["balance.low"] and changed.json()["balance_low_threshold_usd"].startswith("0.5")
    lags = {p["name"]: p["lag"] for p in hooks_mesh.health().json()["projections"]}
    assert "webhooks" in lags  # the outbox's position is in /health like a read model's
    assert http_calls.delete(url, headers=auth).status_code == 204
    assert http_calls.get(url, headers=auth).status_code == 404
    assert http_calls.get(hooks_mesh.url + "/api/webhooks", headers=auth).json() == {"data": []}
