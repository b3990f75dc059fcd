"""Against card testing and piles of unfinished payments, with localstripe: card payment attempts limited per
account and per client address, a decline said without the bank's reason, pending top-ups bounded; and a
refund or dispute Stripe reports before its payment, taken back once when the payment arrives."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import httpx
import pytest

from tests.e2e.conftest import events_after, own_mesh, paid_by_localstripe
from tests.e2e.test_hostile import refused
from tests.e2e.test_topups import WEBHOOK_SECRET, balance, card, deliver, stripe_client, wait_until  # noqa: F401
from tests.e2e.test_walking_skeleton import api, stream_head

PER_ACCOUNT, PER_ADDRESS, PENDING = 3, 5, 2
DECLINED = "the card was declined; try another card or ask your bank"


@pytest.fixture(scope="module")
def pay_mesh(tmp_path_factory, localstripe, mesh_config):
    limits = {
        "MESH_PAYMENT_ATTEMPTS_PER_ACCOUNT": str(PER_ACCOUNT),
        "MESH_PAYMENT_ATTEMPTS_PER_ADDRESS": str(PER_ADDRESS),
        "MESH_PENDING_TOPUPS_PER_ACCOUNT": str(PENDING),
        "MESH_SIGNUPS_PER_ADDRESS": "1000",
    }
    env = paid_by_localstripe(localstripe, WEBHOOK_SECRET, **limits)
    with own_mesh(tmp_path_factory, mesh_config, "payment-limits", env) as mesh:
        yield mesh


class Client:
    """An account calling from its own loopback address (the limits count per client address)."""

    def __init__(self, mesh, address: str):
        self.http = httpx.Client(base_url=mesh.url, transport=httpx.HTTPTransport(local_address=address), timeout=30)
        r = self.http.post(
            "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"}
        )
        assert r.status_code == 201, r.text
        self.account_id, self.token = r.json()["account_id"], r.json()["management_token"]

    def call(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.http.request(method, path, headers={"authorization": f"Bearer {self.token}"}, **kwargs)

    def card_topup(self) -> httpx.Response:
        return self.call("POST", "/api/billing/topups", json={"amount_usd": "20", "provider": "stripe"})

    def bank_topup(self) -> httpx.Response:
        return self.call("POST", "/api/billing/topups", json={"amount_usd": "20", "provider": "bank_transfer"})

    def save_card(self, payment_method: str) -> httpx.Response:
        body = {"threshold_usd": "1", "amount_usd": "10", "payment_method_id": payment_method}
        return self.call("PUT", "/api/billing/auto-refill", json=body)


def test_card_payment_attempts_are_limited_per_account(pay_mesh, stripe_client):
    client = Client(pay_mesh, "127.0.0.2")
    assert client.card_topup().status_code == 201
    assert client.save_card(card(stripe_client, "4242424242424242")).status_code == 200
    assert client.save_card(card(stripe_client, "4242424242424242")).status_code == 200
    # the card saved with a threshold above the balance is charged at once, by the refill worker: let it finish
    wait_until(lambda: balance(pay_mesh, client.token) == Decimal("10"))
    time.sleep(1)  # nothing more may follow
    before = stream_head(pay_mesh)
    for attempt in (client.card_topup, lambda: client.save_card(card(stripe_client, "4242424242424242"))):
        r = attempt()
        error = refused(r, 429, "rate_limited")
        assert "payment attempts for this account" in error["message"] and int(r.headers["retry-after"]) > 0
    assert events_after(pay_mesh, before) == []
    assert client.bank_topup().status_code == 201  # a bank transfer is no card payment


def test_card_payment_attempts_are_limited_per_client_address(pay_mesh, stripe_client):
    first, second = Client(pay_mesh, "127.0.0.3"), Client(pay_mesh, "127.0.0.3")
    for _ in range(PER_ACCOUNT):
        assert first.save_card(card(stripe_client, "4242424242424242")).status_code == 200
    for _ in range(PER_ADDRESS - PER_ACCOUNT):
        assert second.save_card(card(stripe_client, "4242424242424242")).status_code == 200
    r = second.card_topup()
    assert "payment attempts from this address" in refused(r, 429, "rate_limited")["message"]
    assert int(r.headers["retry-after"]) > 0
    elsewhere = Client(pay_mesh, "127.0.0.4")
    elsewhere.token = second.token  # the same account from another address still has an attempt left
    assert elsewhere.card_topup().status_code == 201


def test_a_declined_card_is_said_without_the_banks_reason(pay_mesh, stripe_client):
    client = Client(pay_mesh, "127.0.0.5")
    r = client.save_card(card(stripe_client, "4000000000000002"))  # localstripe declines attaching it
    error = refused(r, 402, "card_declined")
    assert error["message"] == DECLINED
    assert "decline code" in pay_mesh.output()  # the server log has what the bank said

    started = client.card_topup().json()
    failed = {
        "id": "evt_" + uuid.uuid4().hex,
        "type": "payment_intent.payment_failed",
        "data": {
            "object": {
                "id": started["payment_intent_id"],
                "object": "payment_intent",
                "amount": 2000,
                "last_payment_error": {
                    "type": "card_error",
                    "code": "card_declined",
                    "decline_code": "stolen_card",
                    "message": "Your card was declined because it was reported stolen.",
                },
            }
        },
    }
    assert deliver(pay_mesh, failed).json() == {"received": True, "handled": True}
    wait_until(lambda: client.call("GET", "/api/billing/topups").json()[0]["failures"] == 1)
    listed = client.call("GET", "/api/billing/topups").json()[0]
    assert listed["last_failure"] == DECLINED
    assert "stolen_card" in pay_mesh.output()


def test_unfinished_top_ups_per_account_are_bounded(pay_mesh):
    client = Client(pay_mesh, "127.0.0.6")
    references = [client.bank_topup().json()["reference"] for _ in range(PENDING)]
    before = stream_head(pay_mesh)
    error = refused(client.bank_topup(), 409, "pending_topups_exceeded")
    assert f"({PENDING})" in error["message"]
    assert events_after(pay_mesh, before) == []
    confirmed = api(pay_mesh, "POST", f"/admin/topups/{references[0]}/confirm", pay_mesh.operator_token)
    assert confirmed.status_code == 200
    assert client.bank_topup().status_code == 201  # one finished: room for one more


def test_a_refund_and_a_dispute_before_the_payment_are_taken_back_once_when_it_arrives(pay_mesh):
    client = Client(pay_mesh, "127.0.0.7")
    intent = client.card_topup().json()["payment_intent_id"]
    before = stream_head(pay_mesh)
    charge = {"id": "ch_" + uuid.uuid4().hex[:10], "object": "charge", "payment_intent": intent, "amount": 2000}
    refund = {"id": "evt_r", "type": "charge.refunded", "data": {"object": {**charge, "amount_refunded": 500}}}
    dispute = {
        "id": "evt_d",
        "type": "charge.dispute.created",
        "data": {"object": {"id": "dp_" + uuid.uuid4().hex[:10], "payment_intent": intent, "amount": 300}},
    }
    for event in (refund, dispute, refund, dispute):  # early, and retried
        assert deliver(pay_mesh, event).status_code == 200
    wait_until(lambda: {"topup.refund_held", "topup.dispute_held"} <= set(events_after(pay_mesh, before)))
    assert balance(pay_mesh, client.token) == 0

    succeeded = {
        "id": "evt_" + uuid.uuid4().hex,
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": intent,
                "object": "payment_intent",
                "amount": 2000,
                "amount_received": 2000,
                "metadata": {"mesh_account_id": client.account_id},
            }
        },
    }
    for _ in range(3):
        assert deliver(pay_mesh, succeeded).json()["handled"] is True
    wait_until(lambda: balance(pay_mesh, client.token) == Decimal("12"))  # 20 - 5 refunded - 3 disputed
    time.sleep(0.5)  # a second debit or credit would show by now
    assert balance(pay_mesh, client.token) == Decimal("12")
    listed = client.call("GET", "/api/billing/topups").json()[0]
    assert (listed["status"], listed["refunded_usd"], listed["disputed_usd"]) == ("succeeded", "5.000000", "3.000000")
    assert deliver(pay_mesh, refund).status_code == 200  # the refund again, after: nothing more
    time.sleep(0.5)
    assert balance(pay_mesh, client.token) == Decimal("12")
