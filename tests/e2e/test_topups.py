"""Top-ups against localstripe (a stateful fake Stripe server) driven by the stripe library, and bank
transfers confirmed by the operator. Money is credited exactly once, whatever the webhook traffic."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal

import httpx
import pytest
import stripe

from tests import http_calls
from tests.e2e.conftest import MeshProcess, events_after, paid_by_localstripe, send_webhooks, funded_key
from tests.e2e.test_walking_skeleton import api, sign_up

WEBHOOK_SECRET = "whsec_test_" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def billing_mesh(tmp_path_factory, localstripe, mesh_config):
    data = tmp_path_factory.mktemp("topups") / "data"
    mesh = MeshProcess(
        data,
        mesh_config,
        paid_by_localstripe(
            localstripe,
            WEBHOOK_SECRET,
            MESH_AUTO_REFILL_RETRY_SECONDS="0.2",
            MESH_AUTO_REFILL_MAX_FAILURES="3",
            MESH_BANK_TRANSFER_SECONDS="2",
        ),
    )
    send_webhooks(localstripe, mesh, WEBHOOK_SECRET)
    mesh.start()
    yield mesh
    mesh.stop()


@pytest.fixture(scope="module")
def stripe_client(localstripe):
    return stripe.StripeClient("sk_test_mesh", base_addresses={"api": localstripe})


def balance(mesh, token) -> Decimal:
    return Decimal(api(mesh, "GET", "/api/billing/balance", token).json()["balance_usd"])


def wait_until(predicate, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def pay(stripe_client: stripe.StripeClient, payment_intent: str, card: str = "4242424242424242"):
    """What the dashboard does with the client secret (stripe.js confirmCardPayment), done with the API."""
    method = stripe_client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )
    stripe_client.v1.payment_intents.update(payment_intent, params={"payment_method": method.id})
    return stripe_client.v1.payment_intents.confirm(payment_intent)


def signed(event: dict, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> tuple[bytes, str]:
    payload = json.dumps(event).encode()
    t = timestamp or int(time.time())
    signature = hmac.new(secret.encode(), b"%d." % t + payload, hashlib.sha256).hexdigest()
    return payload, f"t={t},v1={signature}"


def deliver(mesh, event: dict, **kwargs) -> httpx.Response:
    payload, header = signed(event, **kwargs)
    return http_calls.post(
        mesh.url + "/api/billing/stripe/webhook",
        content=payload,
        headers={"stripe-signature": header, "content-type": "application/json"},
    )


@pytest.fixture(scope="module")
def paid(billing_mesh, stripe_client) -> dict:
    """An account that topped up 20 USD by card, as the dashboard does it."""
    mesh = billing_mesh
    _, token = sign_up(mesh)
    r = api(mesh, "POST", "/api/billing/topups", token, json={"amount_usd": "20.00", "provider": "stripe"})
    assert r.status_code == 201, r.text
    topup = r.json()
    assert topup["status"] == "pending" and topup["client_secret"].startswith(topup["payment_intent_id"])
    assert balance(mesh, token) == 0
    assert pay(stripe_client, topup["payment_intent_id"]).status == "succeeded"
    wait_until(lambda: balance(mesh, token) == 20)  # localstripe's own signed webhook arrived
    intent = stripe_client.v1.payment_intents.retrieve(topup["payment_intent_id"])
    event = {"id": "evt_" + uuid.uuid4().hex, "type": "payment_intent.succeeded", "data": {"object": intent.to_dict()}}
    return {"token": token, "intent": intent, "event": event}


def test_a_stripe_top_up_credits_once_however_often_the_webhook_comes(billing_mesh, paid):
    for _ in range(5):  # Stripe retries: the same event again and again
        assert deliver(billing_mesh, paid["event"]).json() == {"received": True, "handled": True}
    time.sleep(0.6)  # a second credit would have reached the read model by now
    assert balance(billing_mesh, paid["token"]) == 20
    listed = api(billing_mesh, "GET", "/api/billing/topups", paid["token"]).json()
    assert [(t["status"], t["received_usd"]) for t in listed] == [("succeeded", "20.000000")]


def test_the_same_webhook_after_a_restart_days_later_still_credits_once(billing_mesh, paid):
    mesh, shared = billing_mesh, paid
    assert mesh.stop() == 0
    mesh.start()
    # days later: a fresh delivery (a new signature timestamp) of the same payment
    assert deliver(mesh, {**shared["event"], "id": "evt_" + uuid.uuid4().hex}).status_code == 200
    time.sleep(0.6)
    assert balance(mesh, shared["token"]) == 20


def test_unsigned_forged_and_stale_webhooks_are_refused_and_change_nothing(billing_mesh, paid):
    mesh, shared = billing_mesh, paid
    before = mesh.health().json()["stream_head"]
    event = {
        **shared["event"],
        "data": {"object": {**shared["intent"].to_dict(), "id": "pi_forged", "amount": 1_000_000}},
    }
    payload = json.dumps(event).encode()
    unsigned = http_calls.post(mesh.url + "/api/billing/stripe/webhook", content=payload)
    forged = deliver(mesh, event, secret="whsec_wrong")
    stale = deliver(mesh, event, timestamp=int(time.time()) - 3600)
    for response in (unsigned, forged, stale):
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_signature"
    assert events_after(mesh, before) == []
    assert balance(mesh, shared["token"]) == 20


def test_refunds_and_disputes_debit_once_each(billing_mesh, stripe_client, paid):
    mesh, shared = billing_mesh, paid
    intent = shared["intent"]
    charge_id = intent.latest_charge if isinstance(intent.latest_charge, str) else intent.latest_charge.id
    stripe_client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 500})
    charge = {"id": charge_id, "object": "charge", "payment_intent": intent.id, "amount": 2000, "amount_refunded": 500}
    refund_event = {"id": "evt_r", "type": "charge.refunded", "data": {"object": charge}}
    for _ in range(3):
        deliver(mesh, refund_event)
    wait_until(lambda: balance(mesh, shared["token"]) == 15)
    dispute = {
        "id": "evt_d",
        "type": "charge.dispute.created",
        "data": {
            "object": {
                "id": "dp_" + uuid.uuid4().hex[:10],
                "object": "dispute",
                "payment_intent": intent.id,
                "amount": 1500,
                "charge": charge_id,
            }
        },
    }
    deliver(mesh, dispute)
    deliver(mesh, dispute)
    wait_until(lambda: balance(mesh, shared["token"]) == 0)
    time.sleep(0.5)  # a second debit would show by now
    assert balance(mesh, shared["token"]) == 0
    listed = api(mesh, "GET", "/api/billing/topups", shared["token"]).json()[0]
    assert (listed["refunded_usd"], listed["disputed_usd"]) == ("5.000000", "15.000000")


def test_a_declined_card_is_recorded_and_credits_nothing(billing_mesh, stripe_client):
    mesh = billing_mesh
    _, token = sign_up(mesh)
    topup = api(mesh, "POST", "/api/billing/topups", token, json={"amount_usd": 10, "provider": "stripe"}).json()
    with pytest.raises(stripe.CardError):
        pay(stripe_client, topup["payment_intent_id"], card="4000000000000341")
    wait_until(lambda: api(mesh, "GET", "/api/billing/topups", token).json()[0]["failures"] == 1)
    assert balance(mesh, token) == 0


def test_top_up_bodies_are_validated(billing_mesh):
    mesh = billing_mesh
    _, token = sign_up(mesh)
    for body, code in [
        ({"amount_usd": "4.99"}, "invalid_amount"),
        ({"amount_usd": "501"}, "invalid_amount"),
        ({"amount_usd": "10.001"}, "invalid_amount"),
        ({"amount_usd": 10.5}, "invalid_amount"),
        ({"amount_usd": "10", "provider": "paypal"}, "invalid_provider"),
        ({"amount": "10"}, "invalid_request"),
    ]:
        r = api(mesh, "POST", "/api/billing/topups", token, json=body)
        assert r.status_code == 400 and r.json()["error"]["code"] == code, (body, r.text)
    assert api(mesh, "GET", "/api/billing/topups", token).json() == []


def test_a_bank_transfer_is_credited_once_when_the_operator_confirms_it(billing_mesh):
    mesh = billing_mesh
    _, token = sign_up(mesh)
    r = api(mesh, "POST", "/api/billing/topups", token, json={"amount_usd": "50", "provider": "bank_transfer"})
    assert r.status_code == 201, r.text
    transfer = r.json()
    assert transfer["reference"].startswith("MESH-") and "IBAN DE00" in transfer["instructions"]
    assert transfer["reference"] in transfer["instructions"] and transfer["expires_at"]
    assert balance(mesh, token) == 0
    path = f"/admin/topups/{transfer['reference']}/confirm"
    first = api(mesh, "POST", path, mesh.operator_token)
    assert first.status_code == 200 and first.json()["credited_usd"] == "50.000000"
    again = api(mesh, "POST", path, mesh.operator_token)
    assert again.json()["credited_usd"] == "0.000000"
    assert balance(mesh, token) == 50
    assert api(mesh, "POST", path, token).status_code == 403
    assert api(mesh, "POST", "/admin/topups/MESH-NOPE/confirm", mesh.operator_token).status_code == 404


def test_an_expired_bank_transfer_cannot_be_confirmed(billing_mesh):
    mesh = billing_mesh
    _, token = sign_up(mesh)
    transfer = api(
        mesh, "POST", "/api/billing/topups", token, json={"amount_usd": "50", "provider": "bank_transfer"}
    ).json()
    time.sleep(2.2)  # MESH_BANK_TRANSFER_SECONDS=2 in this server
    late = api(mesh, "POST", f"/admin/topups/{transfer['reference']}/confirm", mesh.operator_token)
    assert late.status_code == 409 and late.json()["error"]["code"] == "topup_state"
    assert balance(mesh, token) == 0


def card(stripe_client: stripe.StripeClient, number: str) -> str:
    return stripe_client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    ).id


def test_auto_refill_fires_once_per_crossing_under_concurrent_usage(billing_mesh, stripe_client):
    import asyncio

    mesh = billing_mesh
    _, token, key, _ = funded_key(mesh, "1", label="refill")
    r = api(
        mesh,
        "PUT",
        "/api/billing/auto-refill",
        token,
        json={"threshold_usd": "0.9", "amount_usd": "10", "payment_method_id": card(stripe_client, "4242424242424242")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["enabled"] is True and r.json()["threshold_usd"] == "0.900000"

    async def spend(n: int) -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:

            async def one(i):
                r = await client.post(
                    mesh.url + "/v1/chat/completions",
                    headers={"authorization": f"Bearer {key}"},
                    json={"model": "acme/gpt-test", "max_tokens": 20, "messages": [{"role": "user", "content": "go"}]},
                )
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(n)))

    # 40 x 0.0111 USD: well below the threshold. max_tokens bounds each request's worst case (no max_tokens:
    # 4,096 tokens, 6.15 USD, more than the whole balance, so 40 at once would take turns for it)
    assert set(asyncio.run(spend(40))) == {200}
    wait_until(lambda: balance(mesh, token) > 5)
    time.sleep(1.5)  # time enough for a wrong second refill to show
    refills = [t for t in api(mesh, "GET", "/api/billing/topups", token).json() if t["provider"] == "stripe"]
    assert [(t["status"], t["received_usd"]) for t in refills] == [("succeeded", "10.000000")]
    spent = Decimal(api(mesh, "GET", "/api/billing/balance", token).json()["spend_usd"])
    assert balance(mesh, token) == Decimal("11") - spent


def test_a_failing_card_turns_auto_refill_off_after_n_tries(billing_mesh, stripe_client):
    mesh = billing_mesh
    _, token, _, _ = funded_key(mesh, "1", label="refill")
    r = api(
        mesh,
        "PUT",
        "/api/billing/auto-refill",
        token,
        json={"threshold_usd": "2", "amount_usd": "10", "payment_method_id": card(stripe_client, "4000000000000341")},
    )
    assert r.status_code == 200, r.text
    wait_until(lambda: api(mesh, "GET", "/api/billing/auto-refill", token).json()["enabled"] is False)
    state = api(mesh, "GET", "/api/billing/auto-refill", token).json()
    assert "3 failed charges" in state["disabled_reason"] and "declined" in state["disabled_reason"]
    assert balance(mesh, token) == 1
    bad = api(
        mesh,
        "PUT",
        "/api/billing/auto-refill",
        token,
        json={"threshold_usd": "2", "amount_usd": "10", "payment_method_id": "tok_visa"},
    )
    assert bad.status_code == 400
