"""Who may touch what: a second account, on every route of the served OpenAPI document, with the first account's
ids (its key, its account, its top-up reference), gets 401/403/404 or only its own data, and changes nothing.

The routes come from the document, so a route added later is in the matrix without editing this test."""

from __future__ import annotations

import re
import uuid


from tests import http_calls
from tests.e2e.conftest import events_after
from tests.e2e.test_walking_skeleton import api, sign_up

# Routes that take no account (they create one, or Stripe signs them), serve health, or act only on the caller's
# own session (logout, password change: they would end the intruder's token mid-matrix).
# The event streams never end: tests/e2e/test_event_stream.py shows each account gets its own events only.
OUTSIDE = {
    "/api/signup",
    "/api/login",
    "/api/billing/stripe/webhook",
    "/health",
    "/api/logout",
    "/api/password",
    "/api/events",
    "/admin/events",
}
MESSAGES = [{"role": "user", "content": "hello {{x}}"}]
BODIES = {  # a well-formed body, so a refusal is about who asks, not about the body
    ("PATCH", "/api/keys/{key_id}"): {"label": "stolen", "spend_cap_usd": "0"},
    ("POST", "/api/keys/{key_id}/rotate"): {"grace_seconds": 0},
    ("POST", "/api/keys"): {"label": "intruder's own"},
    ("PUT", "/api/billing/auto-refill"): {"enabled": False},
    ("POST", "/api/templates"): {"name": "intruder's own", "messages": MESSAGES},
    ("PUT", "/api/templates/{template_id}"): {"name": "stolen", "messages": MESSAGES},
    ("PUT", "/api/templates/{template_id}/labels/{label}"): {"version": 1},
    ("POST", "/api/templates/{template_id}/render"): {"variables": {"x": "y"}},
}
# What the intruder may record: its own key and template.
OWN_EVENTS = {
    "key.created",
    "template.created",
    "template_name.claimed",
    "holdings.opened",
    "holdings.key_added",
    "holdings.template_added",
}


def snapshot(mesh, token: str, key_id: str, template_id: str) -> dict:
    key = api(mesh, "GET", f"/api/keys/{key_id}", token).json()
    key.pop("as_of", None)
    template = api(mesh, "GET", f"/api/templates/{template_id}", token).json()
    template.pop("as_of", None)
    return {
        "key": key,
        "events": api(mesh, "GET", f"/api/keys/{key_id}/events", token).json()["data"],
        "template": template,
        "template_events": api(mesh, "GET", f"/api/templates/{template_id}/events", token).json(),
        "balance": api(mesh, "GET", "/api/billing/balance", token).json()["balance_usd"],
        "topups": api(mesh, "GET", "/api/billing/topups", token).json(),
    }


def test_a_second_account_can_neither_see_nor_change_the_first_ones_things(mesh):
    owner_id, owner = sign_up(mesh)
    assert (
        api(
            mesh,
            "POST",
            f"/admin/accounts/{owner_id}/credits",
            mesh.operator_token,
            json={"amount_usd": "5", "reason": "authz"},
        ).status_code
        == 201
    )
    key = api(mesh, "POST", "/api/keys", owner, json={"label": "owner's"}).json()
    topup = api(mesh, "POST", "/api/billing/topups", owner, json={"amount_usd": "10", "provider": "bank_transfer"})
    assert topup.status_code == 201, topup.text
    reference = topup.json()["reference"]
    template = api(mesh, "POST", "/api/templates", owner, json={"name": "owner-template", "messages": MESSAGES})
    assert template.status_code == 201, template.text
    template_id = template.json()["id"]
    assert (
        api(mesh, "PUT", f"/api/templates/{template_id}/labels/production", owner, json={"version": 1}).status_code
        == 200
    )
    _, intruder = sign_up(mesh)
    ids = {
        "key_id": key["id"],
        "account_id": owner_id,
        "reference": reference,
        "id": key["id"],
        "trace_id": str(uuid.uuid4()),
        "model_id": "mesh/echo",
        "template_id": template_id,
        "label": "production",
    }
    secrets = [key["id"], owner_id, reference, key["prefix"], "owner's", template_id, "owner-template"]
    before = snapshot(mesh, owner, key["id"], template_id)
    head = mesh.health().json()["stream_head"]

    document = http_calls.get(mesh.url + "/schema/openapi.json").json()
    tried = []
    for template, operations in document["paths"].items():
        if template in OUTSIDE:
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: ids.get(m.group(1), key["id"]), template)
        for method in operations:
            method = method.upper()
            body = BODIES.get((method, template), {} if method in ("PUT", "PATCH") else None)
            r = api(mesh, method, path, intruder, json=body)
            label = f"{method} {template}: {r.status_code} {r.text[:300]}"
            tried.append(label)
            if template.startswith("/admin"):
                assert r.status_code in (401, 403), label  # a management token is not the operator's
            elif "{" in template:
                assert r.status_code in (403, 404), label  # another account's thing does not exist for it
            else:
                assert r.status_code < 500, label  # its own things (empty) or a refusal of the body
            assert not [s for s in secrets if s in r.text and s not in path], label  # echoing the path is fine
            if r.status_code >= 400:
                assert set(r.json()["error"]) == {"message", "type", "code", "param"}, label
    print("\n" + "\n".join(t[:90] for t in tried))
    assert len(tried) >= 15, tried
    # Nothing of the first account changed, and nothing was recorded for it.
    assert snapshot(mesh, owner, key["id"], template_id) == before
    assert set(events_after(mesh, head)) <= OWN_EVENTS, tried
