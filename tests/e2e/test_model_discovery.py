"""Model discovery: `GET /admin/providers/{name}/models` and `mesh models discover <provider>` list what each kind
of provider offers (fake upstreams speaking OpenAI's, Anthropic's and Gemini's list formats, paged as they page),
marked with the catalog's ids; a failing upstream is named, its key never shown."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pytest

from tests import http_calls
from tests.e2e.conftest import MESH_FROM_CHECKOUT, own_mesh
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import BackgroundServer

KEYS = {"OPENAI_TEST_KEY": "sk-openai-secret", "ANTHROPIC_TEST_KEY": "sk-ant-secret", "GEMINI_TEST_KEY": "g-secret"}


@pytest.fixture(scope="module")
def discovery(tmp_path_factory):
    fakes = {
        "acme": FakeOpenAI(api_key=KEYS["OPENAI_TEST_KEY"]),
        "claude": FakeAnthropic(api_key=KEYS["ANTHROPIC_TEST_KEY"]),
        "google": FakeGemini(api_key=KEYS["GEMINI_TEST_KEY"]),
    }
    with (
        BackgroundServer(fakes["acme"]) as acme,
        BackgroundServer(fakes["claude"]) as claude,
        BackgroundServer(fakes["google"]) as google,
    ):
        config = tmp_path_factory.mktemp("discovery") / "mesh.toml"
        config.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{acme.url}/v1"
api_key_env = "OPENAI_TEST_KEY"

[providers.claude]
kind = "anthropic"
base_url = "{claude.url}/v1"
api_key_env = "ANTHROPIC_TEST_KEY"

[providers.google]
kind = "gemini"
base_url = "{google.url}/v1beta"
api_key_env = "GEMINI_TEST_KEY"

[[models]]
id = "acme/gpt-test"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"

[[models]]
id = "claude/test"
provider = "claude"
upstream = "claude-test"
prompt_usd_per_1k = "3"
completion_usd_per_1k = "15"

[[models]]
id = "google/flash"
provider = "google"
upstream = "gemini-flash-test"
prompt_usd_per_1k = "0.1"
completion_usd_per_1k = "0.4"
enabled = false
""")
        with own_mesh(tmp_path_factory, config, "discovery-mesh", KEYS) as mesh:
            yield mesh, config, fakes


def listed(mesh, name: str) -> httpx.Response:
    return http_calls.get(
        f"{mesh.url}/admin/providers/{name}/models",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        timeout=30,
    )


def by_id(offer: dict) -> dict:
    return {m["id"]: m for m in offer["models"]}


def test_the_route_lists_each_kind_of_provider_marked_with_the_catalog(discovery):
    mesh, _, fakes = discovery
    acme = listed(mesh, "acme")
    assert acme.status_code == 200, acme.text
    assert (acme.json()["provider"], acme.json()["kind"], acme.json()["truncated"]) == (
        "acme",
        "openai-compatible",
        False,
    )
    models = by_id(acme.json())
    assert sorted(models) == sorted(fakes["acme"].models)
    assert (models["gpt-test"]["mesh_ids"], models["gpt-test"]["enabled"]) == (["acme/gpt-test"], True)
    assert (models["gpt-4o-mini"]["mesh_ids"], models["gpt-4o-mini"]["enabled"]) == ([], False)

    claude = by_id(listed(mesh, "claude").json())  # three models on two pages of two
    assert sorted(claude) == ["claude-haiku-test", "claude-old", "claude-test"]
    assert claude["claude-test"] == {
        "id": "claude-test",
        "display_name": "Claude Test",
        "input_token_limit": 200_000,
        "output_token_limit": 64_000,
        "context_tokens": None,
        "mesh_ids": ["claude/test"],
        "enabled": True,
    }
    assert fakes["claude"].headers[-1]["x-api-key"] == KEYS["ANTHROPIC_TEST_KEY"]  # the provider's credentials

    google = by_id(listed(mesh, "google").json())  # Gemini's "models/…" names, paged by nextPageToken
    assert sorted(google) == ["gemini-flash-test", "gemini-test", "text-embedding-test"]
    flash = google["gemini-flash-test"]
    assert (flash["input_token_limit"], flash["output_token_limit"]) == (1_048_576, 8_192)
    assert (flash["mesh_ids"], flash["enabled"]) == (["google/flash"], False)  # in mesh.toml, switched off

    # the operator switches it on at runtime: the list says so
    switched = http_calls.put(
        f"{mesh.url}/admin/models/google/flash",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"enabled": True},
        timeout=30,
    )
    assert switched.status_code == 200, switched.text
    assert by_id(listed(mesh, "google").json())["gemini-flash-test"]["enabled"] is True


def test_discovery_needs_the_operator_and_names_what_is_wrong(discovery):
    mesh, _, fakes = discovery
    assert http_calls.get(f"{mesh.url}/admin/providers/acme/models", timeout=30).status_code == 401
    unknown = listed(mesh, "nope")
    assert unknown.status_code == 404 and "acme, claude, google" in unknown.json()["error"]["message"]
    echo = listed(mesh, "mesh")  # Mesh's own echo provider has no list
    assert echo.status_code == 400 and echo.json()["error"]["code"] == "not_listable"

    fakes["claude"].fail_with = (529, "overloaded_error", "Overloaded")
    try:
        failed = listed(mesh, "claude")
    finally:
        fakes["claude"].fail_with = None
    assert failed.status_code == 502, failed.text
    error = failed.json()["error"]
    assert error["type"] == "upstream_error" and "claude" in error["message"]
    assert KEYS["ANTHROPIC_TEST_KEY"] not in failed.text

    fakes["acme"].api_key = "another"  # Mesh's key is refused
    try:
        refused = listed(mesh, "acme")
    finally:
        fakes["acme"].api_key = KEYS["OPENAI_TEST_KEY"]
    assert refused.status_code == 502 and refused.json()["error"]["code"] == "upstream_auth_failed"
    assert "acme" in refused.text and KEYS["OPENAI_TEST_KEY"] not in refused.text


def mesh_cli(config, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")} | KEYS | (env or {})
    return subprocess.run(
        [*MESH_FROM_CHECKOUT, "--config", str(config), *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    "provider, listed_ids",
    [
        ("acme", ["gpt-4o-mini", "gpt-free", "gpt-test"]),
        ("claude", ["claude-haiku-test", "claude-old", "claude-test"]),
        ("google", ["gemini-flash-test", "gemini-test", "text-embedding-test"]),
    ],
)
def test_the_cli_lists_each_kind_of_provider(discovery, provider, listed_ids):
    _, config, _ = discovery
    table = mesh_cli(config, "models", "discover", provider)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["MODEL", "MESH"]
    assert [line.split()[0] for line in lines[1:-1]] == listed_ids
    assert f"3 models offered by {provider}" in lines[-1]
    as_json = json.loads(mesh_cli(config, "models", "discover", provider, "--json").stdout)
    assert [m["id"] for m in as_json["models"]] == listed_ids
    if provider == "claude":
        assert "claude/test *" in table.stdout  # enabled in mesh.toml
        assert by_id(as_json)["claude-old"]["output_token_limit"] == 4_096


def test_the_cli_names_an_unknown_provider(discovery):
    _, config, _ = discovery
    unknown = mesh_cli(config, "models", "discover", "nope")
    assert unknown.returncode == 1 and "no provider 'nope' in mesh.toml" in unknown.stderr


def test_the_cli_beside_a_running_mesh_marks_what_operators_changed(discovery, tmp_path):
    mesh, config, _ = discovery
    added = http_calls.post(
        f"{mesh.url}/admin/models",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={
            "id": "claude/old",
            "provider": "claude",
            "upstream": "claude-old",
            "prompt_usd_per_1k": "1",
            "completion_usd_per_1k": "5",
        },
        timeout=30,
    )
    assert added.status_code == 201, added.text
    switched = http_calls.put(
        f"{mesh.url}/admin/models/claude/test",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"enabled": False},
        timeout=30,
    )
    assert switched.status_code == 200, switched.text

    beside = mesh_cli(config, "models", "discover", "claude", "--json", env={"MESH_DATA_DIR": str(mesh.data_dir)})
    assert beside.returncode == 0, beside.stderr
    models = by_id(json.loads(beside.stdout))
    assert (models["claude-old"]["mesh_ids"], models["claude-old"]["enabled"]) == (["claude/old"], True)
    assert (models["claude-test"]["mesh_ids"], models["claude-test"]["enabled"]) == (["claude/test"], False)
    assert "mesh.toml only" not in beside.stderr
    assert models == by_id(listed(mesh, "claude").json())  # as the running Mesh's route marks them

    alone = mesh_cli(config, "models", "discover", "claude", "--json", env={"MESH_DATA_DIR": str(tmp_path / "none")})
    models = by_id(json.loads(alone.stdout))
    assert (models["claude-old"]["mesh_ids"], models["claude-test"]["enabled"]) == ([], True)
    assert "no running Mesh found: marked from mesh.toml only" in alone.stderr
