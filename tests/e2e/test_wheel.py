"""What ships: the built wheel, installed into a fresh virtualenv outside the checkout, runs `mesh up` in an empty
directory and serves the dashboard, its static assets, the API docs and a billed chat completion.

An editable install reads every file from the checkout, so only this test notices a file the wheel leaves out
(the dashboard's templates were once missing from every built install and the Docker image)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from decimal import Decimal
from pathlib import Path

import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import AS_INSTALLED, SHARED_ADDRESS_LIMITS, MeshProcess

pytestmark = pytest.mark.long  # scheduled first (tests/conftest.py)

CHECKOUT = Path(__file__).resolve().parents[2]
# what the build never needs: the checkout's own virtualenv, data and caches
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv*", ".mesh", "build", "dist", "*.egg-info", "__pycache__", ".*cache")
INSTALL_TIMEOUT = 900


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """The `bin/` of a fresh virtualenv holding the wheel built from a copy of this checkout, and its dependencies."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(CHECKOUT, source, ignore=NOT_SOURCE)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(root / "dist"), str(source)], root)
    (wheel,) = (root / "dist").glob("mesh_gateway-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], root)
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], root)
    return venv / "bin"


def run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"


def test_the_wheel_holds_every_file_the_packages_hold(installed_wheel):
    """Each non-Python file under a package of the checkout is in the installed package, byte for byte."""
    site = Path(
        subprocess.check_output(
            [str(installed_wheel / "python"), "-c", "import api, pathlib; print(pathlib.Path(api.__file__).parent)"],
            cwd=installed_wheel,
            text=True,
        ).strip()
    ).parent
    assert CHECKOUT not in site.parents and site != CHECKOUT, f"the wheel's venv imports the checkout: {site}"
    missing = []
    for package in ("domain", "commands", "projections", "gateway", "api"):
        for path in (CHECKOUT / package).rglob("*"):
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts:
                installed = site / path.relative_to(CHECKOUT)
                if not installed.is_file() or installed.read_bytes() != path.read_bytes():
                    missing.append(str(path.relative_to(CHECKOUT)))
    assert missing == []


def test_the_wheel_installs_none_of_the_packages_the_suite_hides_from_mesh(installed_wheel):
    """The suite's Meshes run with the test extra's aiohttp and pydantic hidden (tests/e2e/as_installed), which is
    right only while a real install has neither."""
    hidden = sorted(path.name for path in AS_INSTALLED.iterdir() if (path / "__init__.py").is_file())
    assert hidden == ["aiohttp", "pydantic"]
    found = subprocess.check_output(
        [
            str(installed_wheel / "python"),
            "-c",
            "import importlib.util, sys; print(*[name for name in sys.argv[1:] if importlib.util.find_spec(name)])",
            *hidden,
        ],
        cwd=installed_wheel,
        text=True,
    ).split()
    assert found == []


def test_mesh_up_from_the_wheel_serves_the_dashboard_docs_and_a_billed_completion(
    installed_wheel, tmp_path, mesh_config
):
    empty = tmp_path / "empty"
    empty.mkdir()
    mesh = MeshProcess(
        tmp_path / "data", mesh_config, env=SHARED_ADDRESS_LIMITS, command=(str(installed_wheel / "mesh"),), cwd=empty
    )
    mesh.start(timeout=120)
    try:
        for page in ("/login", "/signup"):
            r = http_calls.get(mesh.url + page)
            assert r.status_code == 200 and "<form" in r.text, (page, r.text[:300])
            for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', r.text):
                assert http_calls.get(mesh.url + asset).status_code == 200, asset
        docs = http_calls.get(mesh.url + "/schema", follow_redirects=True)
        assert docs.status_code == 200, docs.text[:300]
        assets = re.findall(r'(?:href|src)="(/schema/[^"]+)"', docs.text)
        assert len(assets) >= 3, docs.text
        for asset in assets:
            assert http_calls.get(mesh.url + asset).status_code == 200, asset
        assert http_calls.get(mesh.url + "/schema/openapi.json").json()["info"]["title"] == "Mesh"

        email = f"{uuid.uuid4().hex[:8]}@example.com"
        session = http_calls.post(mesh.url + "/api/signup", json={"email": email, "password": "long enough"}).json()
        auth = {"authorization": f"Bearer {session['management_token']}"}
        granted = http_calls.post(
            f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
            headers={"authorization": f"Bearer {mesh.operator_token}"},
            json={"amount_usd": "2", "reason": "wheel"},
        )
        assert granted.status_code == 201, granted.text
        key = http_calls.post(mesh.url + "/api/keys", headers=auth, json={"label": "wheel"}).json()["key"]
        client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
        answer = client.chat.completions.create(model="acme/gpt-test", messages=[{"role": "user", "content": "hi"}])
        usage = answer.usage
        cost = (usage.prompt_tokens * Decimal("0.5") + usage.completion_tokens * Decimal("1.5")) / 1000
        deadline = time.monotonic() + 15
        while True:
            balance = Decimal(http_calls.get(mesh.url + "/api/billing/balance", headers=auth).json()["balance_usd"])
            if balance == Decimal("2") - cost or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert balance == Decimal("2") - cost
    finally:
        assert mesh.stop() == 0


def test_the_wheel_is_a_zip_of_modules_and_package_data_only(installed_wheel):
    """No tests, docs or benchmarks ride along in the wheel."""
    (wheel,) = (installed_wheel.parent.parent / "dist").glob("*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops - {"domain", "commands", "projections", "gateway", "api"} == {
        next(t for t in tops if t.endswith(".dist-info"))
    }
