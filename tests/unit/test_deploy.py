"""The deployment files hold what the README promises: an example config that loads, a non-root image built
with its dependencies, NATS and PostgreSQL closed to the outside and password-protected, a healthcheck each."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from api.config import load_catalog

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_example_config_loads_with_a_price_for_every_model():
    catalog = load_catalog(ROOT / "mesh.example.toml", {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"})
    assert len(catalog.models) >= 3


def test_what_compose_serves_by_default_is_not_free_to_the_public():
    """The example config compose mounts by default has no free model, and sign-up there needs an invite."""
    catalog = load_catalog(ROOT / "mesh.example.toml", {"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-y"})
    free = [m.id for m in catalog.models.values() if m.price.is_free and m.id != "mesh/echo"]
    assert free == []
    assert compose()["services"]["mesh"]["environment"]["MESH_SIGNUP"] == "${MESH_SIGNUP:-invite}"


def test_only_the_gateway_is_published_and_every_service_has_a_healthcheck():
    services = compose()["services"]
    assert set(services) == {"nats", "postgres", "mesh", "projections"}
    assert [name for name, s in services.items() if s.get("ports")] == ["mesh"]
    assert services["mesh"]["ports"] == ["127.0.0.1:8080:8080"]
    assert all(s.get("healthcheck", {}).get("test") for s in services.values())
    for name in ("mesh", "projections"):
        assert services[name]["build"] == "."
        assert {"nats": {"condition": "service_healthy"}, "postgres": {"condition": "service_healthy"}} == services[
            name
        ]["depends_on"]
        assert any(
            v.endswith(":/etc/mesh/mesh.toml:ro") and "mesh.example.toml" in v for v in services[name]["volumes"]
        )


def test_nats_and_postgres_need_passwords_from_the_environment():
    services = compose()["services"]
    env = services["mesh"]["environment"]
    assert env["MESH_NATS_URL"].startswith("nats://mesh:${NATS_PASSWORD:?")
    assert env["MESH_DATABASE_URL"].startswith("postgresql://mesh:${POSTGRES_PASSWORD:?")
    assert services["nats"]["environment"]["NATS_PASSWORD"].startswith("${NATS_PASSWORD:?")
    assert services["postgres"]["environment"]["MESH_DB_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    config = (ROOT / "deploy" / "nats.conf").read_text()
    assert re.search(r"authorization\s*{\s*user: \$NATS_USER\s*password: \$NATS_PASSWORD\s*}", config)
    assert any("/etc/nats/mesh.conf" in part for part in services["nats"]["command"])


def test_the_image_runs_as_a_user_from_an_exact_base_with_dependencies_installed():
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M).group(1)
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^RUN pip install .*\.", dockerfile, re.M)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    for pattern in packages["include"]:
        assert f"COPY {pattern.rstrip('*')} ./{pattern.rstrip('*')}" in dockerfile


def test_the_dockerfile_installs_the_built_wheel():
    """The image is a thin layer over the wheel: it builds one and installs it, not the source tree."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip wheel" in dockerfile and re.search(r"pip install [^\n]*\.whl", dockerfile), dockerfile
    assert not re.search(r"pip install [^\n]*--no-compile \.\s", dockerfile)


def test_every_service_has_a_memory_limit():
    services = compose()["services"]
    assert all(re.fullmatch(r"\$\{MESH_\w+_MEMORY:-\d+[mg]\}", s.get("mem_limit", "")) for s in services.values())


def test_secrets_go_only_to_the_service_that_uses_them():
    services = compose()["services"]
    gateway_only = {"MESH_STRIPE_SECRET_KEY", "MESH_STRIPE_WEBHOOK_SECRET", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert gateway_only <= set(services["mesh"]["environment"])
    assert not gateway_only & set(services["projections"]["environment"])
    assert not {"NATS_PASSWORD", "MESH_OPERATOR_TOKEN"} & set(services["postgres"]["environment"])


def test_mesh_connects_to_postgres_as_an_ordinary_role_made_by_the_init_script():
    postgres = compose()["services"]["postgres"]
    assert postgres["environment"]["POSTGRES_USER"] != "mesh"  # the image's POSTGRES_USER is a superuser
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_ADMIN_PASSWORD:?")
    assert "./deploy/postgres-init.sh:/docker-entrypoint-initdb.d/10-mesh-role.sh:ro" in postgres["volumes"]
    script = (ROOT / "deploy" / "postgres-init.sh").read_text()
    assert "NOSUPERUSER NOCREATEDB NOCREATEROLE" in script and "CREATE DATABASE mesh OWNER mesh" in script
