"""The compose set-up's database role: `deploy/postgres-init.sh`, run as the postgres image runs it, makes an
ordinary role that owns the database `mesh`, and Mesh runs on it (schema, read models, a billed request) with no
superuser rights."""

from __future__ import annotations

import os
import subprocess
import uuid
from decimal import Decimal
from pathlib import Path

import openai
import psycopg

from api.postgres_server import PostgresServer
from tests import http_calls
from tests.e2e.conftest import SHARED_ADDRESS_LIMITS, MeshProcess
from tests.e2e.test_walking_skeleton import cost, wait_for_balance

INIT_SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "postgres-init.sh"
MESH_PASSWORD = "role-password-" + uuid.uuid4().hex[:8]


def test_mesh_runs_on_the_ordinary_role_the_init_script_makes(postgres_server, tmp_path, mesh_config):
    env = {
        **os.environ,
        "PATH": f"{PostgresServer.bin_dir()}:{os.environ['PATH']}",
        "PGHOST": postgres_server.host,
        "PGPORT": str(postgres_server.port),
        "PGPASSWORD": postgres_server.password,
        "POSTGRES_USER": "postgres",
        "MESH_DB_PASSWORD": MESH_PASSWORD,
    }
    result = subprocess.run(["sh", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert MESH_PASSWORD not in result.stdout + result.stderr

    with psycopg.connect(postgres_server.url) as conn:
        rights = conn.execute(
            "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls from pg_roles"
            " where rolname = 'mesh'"
        ).fetchone()
    assert rights == (False, False, False, False, False)

    url = f"postgresql://mesh:{MESH_PASSWORD}@{postgres_server.host}:{postgres_server.port}/mesh"
    mesh = MeshProcess(tmp_path / "data", mesh_config, env={**SHARED_ADDRESS_LIMITS, "MESH_DATABASE_URL": url})
    mesh.start(timeout=90)
    try:
        session = http_calls.post(
            mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "long enough"}
        ).json()
        token = session["management_token"]
        granted = http_calls.post(
            f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
            headers={"authorization": f"Bearer {mesh.operator_token}"},
            json={"amount_usd": "1", "reason": "role"},
        )
        assert granted.status_code == 201, granted.text
        key = http_calls.post(mesh.url + "/api/keys", headers={"authorization": f"Bearer {token}"}, json={"label": "r"})
        client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key.json()["key"], max_retries=0)
        usage = client.chat.completions.create(
            model="acme/gpt-test", messages=[{"role": "user", "content": "hi"}]
        ).usage
        expected = Decimal("1") - cost(usage.prompt_tokens, usage.completion_tokens)
        assert Decimal(wait_for_balance(mesh, token, expected)["balance_usd"]) == expected
    finally:
        assert mesh.stop() == 0
    assert MESH_PASSWORD not in mesh.output()
