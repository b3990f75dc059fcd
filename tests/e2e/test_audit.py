"""`mesh audit` beside a running `mesh up`: the read models replayed into scratch tables equal the live ones after
mixed traffic, and a balance altered by hand in PostgreSQL is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import openai
import psycopg
import pytest

from tests import http_calls
from tests.e2e.conftest import SHARED_ADDRESS_LIMITS, UPSTREAM_KEY, funded_key, own_mesh

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Say {{word}}"}]


@pytest.fixture(scope="module")
def audited(tmp_path_factory, mesh_config):
    with own_mesh(tmp_path_factory, mesh_config, "audit", {**SHARED_ADDRESS_LIMITS}) as mesh:
        yield mesh


def run_audit(mesh, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_DATA_DIR"] = str(mesh.data_dir)
    env["MESH_CONFIG"] = str(mesh.config)  # `verify` checks prices against the configured ones
    env["ACME_API_KEY"] = UPSTREAM_KEY  # as `mesh up` has it: the configuration is read whole
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", *args], env=env, capture_output=True, text=True, timeout=300
    )


def mixed_traffic(mesh) -> list:
    """Two accounts: keys (one capped, one changed and revoked), operator grants and a debit by refund of a
    bank transfer, chat requests through the gateway (one with a template, one to a model added at runtime),
    templates with versions and labels."""
    operator = {"authorization": f"Bearer {mesh.operator_token}"}
    accounts = [funded_key(mesh, "5"), funded_key(mesh, "2", spend_cap_usd="1", cap_reset="daily")]
    for funded in accounts:
        auth = {"authorization": f"Bearer {funded.token}"}
        client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key)
        for _ in range(3):
            client.chat.completions.create(model="acme/gpt-test", messages=[{"role": "user", "content": "hi"}])
        template = http_calls.post(
            mesh.url + "/api/templates", headers=auth, json={"name": f"t-{uuid.uuid4().hex[:6]}", "messages": MESSAGES}
        )
        assert template.status_code == 201, template.text
        template_id = template.json()["id"]
        saved = http_calls.put(
            f"{mesh.url}/api/templates/{template_id}",
            headers=auth,
            json={"name": template.json()["name"], "messages": MESSAGES, "description": "v2"},
        )
        assert saved.status_code == 200, saved.text
        labeled = http_calls.put(
            f"{mesh.url}/api/templates/{template_id}/labels/prod", headers=auth, json={"version": 1}
        )
        assert labeled.status_code in (200, 201), labeled.text
        client.chat.completions.create(
            model="acme/gpt-test",
            messages=[],
            extra_body={"template": template.json()["name"], "variables": {"word": "yes"}},
        )
        other = http_calls.post(mesh.url + "/api/keys", headers=auth, json={"label": "other"}).json()
        assert (
            http_calls.patch(f"{mesh.url}/api/keys/{other['id']}", headers=auth, json={"label": "x"}).status_code == 200
        )
        assert http_calls.post(f"{mesh.url}/api/keys/{other['id']}/revoke", headers=auth).status_code == 200
        topup = http_calls.post(
            mesh.url + "/api/billing/topups", headers=auth, json={"amount_usd": "10", "provider": "bank_transfer"}
        )
        assert topup.status_code in (200, 201), topup.text
        reference = topup.json()["reference"]
        confirmed = http_calls.post(f"{mesh.url}/admin/topups/{reference}/confirm", headers=operator, json={})
        assert confirmed.status_code == 200, confirmed.text
    added = http_calls.post(  # a model added at runtime: its price is the event's, not mesh.toml's
        f"{mesh.url}/admin/models",
        headers=operator,
        json={
            "id": "acme/added",
            "provider": "acme",
            "upstream": "gpt-free",
            "prompt_usd_per_1k": "0.25",
            "completion_usd_per_1k": "0.75",
            "max_output_tokens": 256,
        },
    )
    assert added.status_code == 201, added.text
    openai.OpenAI(base_url=mesh.url + "/v1", api_key=accounts[0].key).chat.completions.create(
        model="acme/added", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    granted = http_calls.post(
        f"{mesh.url}/admin/accounts/{accounts[0].account_id}/credits",
        headers=operator,
        json={"amount_usd": "1.25", "reason": "goodwill"},
    )
    assert granted.status_code == 201
    return accounts


def database_url(mesh) -> str:
    return json.loads((mesh.data_dir / "running.json").read_text())["database_url"]


def test_audit_finds_no_difference_after_mixed_traffic_and_names_an_altered_balance(audited):
    first, second = mixed_traffic(audited)
    clean = run_audit(audited)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    summary = clean.stdout.strip().splitlines()[-1]
    assert summary.startswith("0 differences in ") and summary.endswith(" events")
    assert int(summary.split()[3]) > 20

    verified = run_audit(audited, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip().splitlines()[-1].startswith("0 violations in ")

    only = run_audit(audited, "--account", second.account_id)
    assert only.returncode == 0, only.stdout + only.stderr

    with psycopg.connect(database_url(audited), autocommit=True) as conn:
        conn.execute("update balances set credits = credits + 1000000 where account_id = %s", (first.account_id,))
    altered = run_audit(audited)
    assert altered.returncode == 1, altered.stdout + altered.stderr
    line = next(line for line in altered.stdout.splitlines() if line.startswith("billing.balances"))
    assert f"account_id={first.account_id}" in line and "credits live" in line
    assert altered.stdout.strip().splitlines()[-1].startswith("1 differences in ")

    # --account: only that account's rows; the other account's audit stays clean
    assert run_audit(audited, "--account", second.account_id).returncode == 0
    named = run_audit(audited, "--account", first.account_id)
    assert named.returncode == 1 and first.account_id in named.stdout
    with psycopg.connect(database_url(audited), autocommit=True) as conn:
        conn.execute("update balances set credits = credits - 1000000 where account_id = %s", (first.account_id,))
    assert run_audit(audited).returncode == 0
    with psycopg.connect(database_url(audited)) as conn:  # the scratch schema is gone
        assert conn.execute("select count(*) from pg_namespace where nspname like 'mesh_audit_%'").fetchone()[0] == 0


def test_audit_at_an_instant_compares_the_live_answers_about_it(audited):
    before = funded_key(audited, "3")
    client = openai.OpenAI(base_url=audited.url + "/v1", api_key=before.key)
    client.chat.completions.create(model="acme/gpt-test", messages=[{"role": "user", "content": "hi"}])
    instant = datetime.now(timezone.utc)
    time.sleep(0.05)
    after = funded_key(audited, "4")  # signed up, granted and used after the instant
    openai.OpenAI(base_url=audited.url + "/v1", api_key=after.key).chat.completions.create(
        model="acme/gpt-test", messages=[{"role": "user", "content": "hi"}]
    )
    client.chat.completions.create(model="acme/gpt-test", messages=[{"role": "user", "content": "again"}])

    at = run_audit(audited, "--at", instant.isoformat())
    assert at.returncode == 0, at.stdout + at.stderr
    assert at.stdout.strip().splitlines()[-1].startswith("0 differences in ")

    # a grant made before the instant, altered by hand: the balance as of then and the grant differ
    with psycopg.connect(database_url(audited), autocommit=True) as conn:
        conn.execute("update credit_grants set amount = amount + 7 where account_id = %s", (before.account_id,))
    try:
        altered = run_audit(audited, "--at", instant.isoformat(), "--account", before.account_id)
        assert altered.returncode == 1, altered.stdout + altered.stderr
        lines = altered.stdout.splitlines()
        assert any(line.startswith("billing.balances") and "credits live" in line for line in lines), lines
        assert any(line.startswith("billing.credit_grants") and "amount live" in line for line in lines), lines
        assert run_audit(audited, "--at", instant.isoformat(), "--account", after.account_id).returncode == 0
    finally:
        with psycopg.connect(database_url(audited), autocommit=True) as conn:
            conn.execute("update credit_grants set amount = amount - 7 where account_id = %s", (before.account_id,))
