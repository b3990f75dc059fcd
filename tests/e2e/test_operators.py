"""The operators through the admin API: accounts made operators on the command line act with their own
management token and are named in every event they cause; accounts are found, suspended (their keys get 402 at
the gateway, through the openai SDK) and resumed; credits are taken back within what keeps money exact; bank
transfers are listed and rejected; a trace id finds its request in any account."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import openai
import pytest

from tests.e2e.conftest import funded_key
from tests.e2e.test_walking_skeleton import api, sign_up

MESSAGES = [{"role": "user", "content": "hello"}]


def mesh_cli(mesh, *args: str) -> subprocess.CompletedProcess:
    """`mesh <args>` beside the running Mesh (it uses that one's servers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_DATA_DIR"] = str(mesh.data_dir)
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def make_operator(mesh, email: str, token: str) -> None:
    """`mesh operators add <email>`, then wait until the account's token reaches /admin."""
    result = mesh_cli(mesh, "operators", "add", email)
    assert result.returncode == 0, result.stderr
    assert "is now an operator" in result.stdout
    deadline = time.monotonic() + 10
    while api(mesh, "GET", "/admin/audit?limit=1", token).status_code != 200:
        assert time.monotonic() < deadline, "the operator role never reached the directory"
        time.sleep(0.1)


def email_of(mesh, account_id: str) -> str:
    return api(mesh, "GET", f"/admin/accounts/{account_id}", mesh.operator_token).json()["email"]


@pytest.fixture(scope="module")
def operator(mesh) -> tuple[str, str]:
    """An account made an operator with `mesh operators add`: (account id, management token)."""
    account_id, token = sign_up(mesh)
    assert api(mesh, "GET", "/admin/accounts", token).status_code == 403  # not yet
    make_operator(mesh, email_of(mesh, account_id), token)
    return account_id, token


def test_operators_are_listed_removed_and_an_unknown_email_is_refused(mesh, operator):
    account_id, _ = operator
    listed = mesh_cli(mesh, "operators", "list")
    assert listed.returncode == 0 and account_id in listed.stdout
    unknown = mesh_cli(mesh, "operators", "add", "nobody-" + uuid.uuid4().hex[:6] + "@example.com")
    assert unknown.returncode == 2 and "sign up first" in unknown.stderr
    other_id, other = sign_up(mesh)
    make_operator(mesh, email_of(mesh, other_id), other)
    removed = mesh_cli(mesh, "operators", "remove", email_of(mesh, other_id))
    assert removed.returncode == 0 and "is no longer an operator" in removed.stdout
    deadline = time.monotonic() + 10
    while api(mesh, "GET", "/admin/audit?limit=1", other).status_code != 403:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    make_operator(mesh, email_of(mesh, other_id), other)  # a suspended operator acts as none
    assert api(
        mesh, "POST", f"/admin/accounts/{other_id}/suspend", mesh.operator_token, json={"reason": "left"}
    ).is_success
    refused = api(mesh, "GET", "/admin/audit?limit=1", other)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"


def test_an_account_is_found_by_part_of_its_email_or_its_id(mesh, operator):
    _, op = operator
    customer = funded_key(mesh, "7")
    address = email_of(mesh, customer.account_id)
    part = address.split("@")[0][2:6].upper()
    found = api(mesh, "GET", "/admin/accounts", op, params={"query": part}).json()
    assert customer.account_id in [a["id"] for a in found["data"]]
    by_id = api(mesh, "GET", "/admin/accounts", op, params={"query": customer.account_id}).json()["data"]
    assert [(a["email"], a["balance_usd"]) for a in by_id] == [(address, "7.000000")]
    page = api(mesh, "GET", "/admin/accounts", op, params={"limit": 1}).json()
    assert len(page["data"]) == 1 and page["next_cursor"] == page["data"][0]["email"]
    detail = api(mesh, "GET", f"/admin/accounts/{customer.account_id}", op).json()
    assert [k["id"] for k in detail["keys"]] == [customer.created["id"]]
    assert detail["credits"][0]["amount_usd"] == "7.000000" and detail["suspended"] is False
    assert api(mesh, "GET", "/admin/accounts", op, params={"query": "x" * 400}).status_code == 400
    for wildcard in ("%", "_"):  # searched as themselves: no email here holds one
        assert api(mesh, "GET", "/admin/accounts", op, params={"query": wildcard}).json()["data"] == []
    assert api(mesh, "GET", f"/admin/accounts/{uuid.uuid4()}", op).status_code == 404


def test_credits_are_granted_and_taken_back_by_a_named_operator(mesh, operator):
    op_id, op = operator
    customer = funded_key(mesh, "2")
    granted = api(
        mesh,
        "POST",
        f"/admin/accounts/{customer.account_id}/credits",
        op,
        json={"amount_usd": "3", "reason": "goodwill"},
    )
    assert granted.status_code == 201, granted.text
    too_much = api(
        mesh, "POST", f"/admin/accounts/{customer.account_id}/debits", op, json={"amount_usd": "5.01", "reason": "x"}
    )
    assert too_much.status_code == 400 and "at most 5.000000 USD" in too_much.json()["error"]["message"]
    taken = api(
        mesh, "POST", f"/admin/accounts/{customer.account_id}/debits", op, json={"amount_usd": "1", "reason": "twice"}
    )
    assert taken.status_code == 201, taken.text
    balance = api(mesh, "GET", "/api/billing/balance", customer.token).json()
    assert balance["balance_usd"] == "4.000000"
    audit = api(mesh, "GET", "/admin/audit", mesh.operator_token, params={"account_id": customer.account_id}).json()
    acts = [(a["action"], a["operator"], a["details"].get("amount_usd")) for a in audit["data"]]
    assert acts == [
        ("credits taken back", op_id, "1.000000"),
        ("credits granted", op_id, "3.000000"),
        ("credits granted", "token", "2.000000"),  # funded_key's grant, made with the operator token
    ]
    assert audit["data"][0]["operator_email"] == email_of(mesh, op_id)


def test_a_suspended_accounts_key_gets_402_and_it_cannot_log_in_until_resumed(mesh, operator):
    _, op = operator
    customer = funded_key(mesh, "5")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=customer.key, max_retries=0)
    assert client.chat.completions.create(model="acme/gpt-test", messages=MESSAGES).choices
    address = email_of(mesh, customer.account_id)
    blank = api(mesh, "POST", f"/admin/accounts/{customer.account_id}/suspend", op, json={"reason": "  "})
    assert blank.status_code == 400 and blank.json()["error"]["code"] == "invalid_reason"
    assert client.chat.completions.create(model="acme/gpt-test", messages=MESSAGES).choices  # nothing changed
    suspended = api(mesh, "POST", f"/admin/accounts/{customer.account_id}/suspend", op, json={"reason": "card testing"})
    assert suspended.status_code == 200 and suspended.json()["suspended_reason"] == "card testing"
    deadline = time.monotonic() + 5
    while True:  # gateways hear it from NATS within milliseconds
        try:
            client.chat.completions.create(model="acme/gpt-test", messages=MESSAGES)
        except openai.APIStatusError as exc:
            assert exc.status_code == 402 and exc.body["code"] == "account_suspended", exc.body
            break
        assert time.monotonic() < deadline, "the key still works after the suspension"
        time.sleep(0.05)
    login = api(mesh, "POST", "/api/login", json={"email": address, "password": "correct horse battery"})
    assert login.status_code == 403 and login.json()["error"]["code"] == "account_suspended"
    made = api(mesh, "POST", "/api/keys", customer.token, json={"label": "another"})
    assert made.status_code == 403 and made.json()["error"]["code"] == "account_suspended"
    assert api(mesh, "GET", "/api/keys", customer.token).status_code == 200  # nothing deleted
    resumed = api(mesh, "POST", f"/admin/accounts/{customer.account_id}/resume", op, json={"reason": "explained"})
    assert resumed.status_code == 200 and resumed.json()["suspended"] is False
    assert client.chat.completions.create(model="acme/gpt-test", messages=MESSAGES).choices
    login = api(mesh, "POST", "/api/login", json={"email": address, "password": "correct horse battery"})
    assert login.status_code == 200, login.text


def test_pending_transfers_are_listed_and_one_rejected_can_no_longer_be_confirmed(mesh, operator):
    _, op = operator
    customer_id, customer = sign_up(mesh)
    started = api(mesh, "POST", "/api/billing/topups", customer, json={"amount_usd": "25", "provider": "bank_transfer"})
    assert started.status_code == 201, started.text
    reference = started.json()["reference"]
    pending = api(mesh, "GET", "/admin/topups", op).json()["data"]
    mine = [t for t in pending if t["reference"] == reference]
    assert [(t["account_id"], t["amount_usd"], t["status"]) for t in mine] == [(customer_id, "25.000000", "pending")]
    assert mine[0]["email"] == email_of(mesh, customer_id)
    blank = api(mesh, "POST", f"/admin/topups/{reference}/reject", op, json={"reason": " "})
    assert blank.status_code == 400 and blank.json()["error"]["code"] == "invalid_reason"
    rejected = api(mesh, "POST", f"/admin/topups/{reference}/reject", op, json={"reason": "never arrived"})
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    late = api(mesh, "POST", f"/admin/topups/{reference}/confirm", op, json={"amount_usd": "25"})
    assert late.status_code == 409 and late.json()["error"]["code"] == "topup_state"
    assert api(mesh, "GET", "/api/billing/balance", customer).json()["balance_usd"] == "0.000000"
    listed = api(mesh, "GET", "/admin/topups", op, params={"status": "rejected"}).json()["data"]
    assert reference in [t["reference"] for t in listed]
    assert api(mesh, "GET", "/admin/topups", op, params={"status": "lost"}).status_code == 400


def test_a_trace_id_finds_its_request_in_any_account(mesh, operator):
    _, op = operator
    customer = funded_key(mesh, "5")
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=customer.key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="acme/gpt-test", messages=MESSAGES)
    trace_id = raw.headers["x-mesh-trace-id"]
    deadline = time.monotonic() + 10
    while (found := api(mesh, "GET", f"/admin/logs/{trace_id}", op)).status_code == 404:
        assert time.monotonic() < deadline, found.text
        time.sleep(0.1)
    entry = found.json()
    assert (entry["trace_id"], entry["account_id"], entry["model"]) == (trace_id, customer.account_id, "acme/gpt-test")
    assert entry["account_email"] == email_of(mesh, customer.account_id)
    assert api(mesh, "GET", f"/admin/logs/{uuid.uuid4()}", op).status_code == 404


def test_an_invite_and_a_price_change_name_their_operator_in_the_audit(mesh, operator):
    op_id, op = operator
    invite = api(mesh, "POST", "/admin/invites", op, json={})
    assert invite.status_code == 201, invite.text
    try:
        changed = api(mesh, "PUT", "/admin/models/acme/gpt-test", op, json={"prompt_usd_per_1k": "0.75"})
        assert changed.status_code == 200, changed.text
    finally:
        api(mesh, "PUT", "/admin/models/acme/gpt-test", mesh.operator_token, json={"prompt_usd_per_1k": "0.5"})
    audit = api(mesh, "GET", "/admin/audit", op, params={"limit": 10}).json()["data"]
    acts = [(a["action"], a["operator"], a["target"]) for a in audit]
    assert acts[:3] == [
        ("price changed", "token", "acme/gpt-test"),
        ("price changed", op_id, "acme/gpt-test"),
        ("invite created", op_id, invite.json()["id"]),
    ]
    assert audit[1]["details"]["prompt_per_1k"] == 750_000_000_000
    older = api(mesh, "GET", "/admin/audit", op, params={"limit": 1, "cursor": str(audit[0]["position"])}).json()
    assert older["data"][0]["position"] == audit[1]["position"]
    assert api(mesh, "GET", "/admin/audit", op, params={"cursor": "x"}).status_code == 400
