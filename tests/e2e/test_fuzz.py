"""schemathesis against the OpenAPI document a running Mesh serves, as a person runs it from the command line:
`--checks all` and every phase (examples, coverage, fuzzing, stateful), with a management token for the account
scheme and the operator token for the operator scheme (tests/e2e/schemathesis.toml). Any answer the document
does not state is a failure: an undeclared status, a body not in the declared shape (every error is the
ErrorResponse component), a valid request refused, an invalid one accepted, a 5xx. Bounded for CI by a fixed
seed and a few examples per operation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import SHARED_ADDRESS_LIMITS, MeshProcess
from tests.e2e.test_walking_skeleton import api, sign_up

pytestmark = pytest.mark.long  # scheduled first (tests/conftest.py)

CONFIG = Path(__file__).with_name("schemathesis.toml")
PHASES = "examples,coverage,fuzzing,stateful"
MAX_EXAMPLES = 10  # per operation and phase; the coverage phase adds its own (one per rule at each boundary)
SEED = 23
# Routes that end the caller's session (logout; a password change revokes every token): run apart, with a session
# of their own, so the other operations keep a valid token.
SESSION_ENDING = r"^/api/(logout|password)$"
# The event streams never end (an answer schemathesis would wait for): tests/e2e/test_event_stream.py covers them.
STREAMS = r"^/(api|admin)/events$"
RUN_SECONDS = 600  # a bound on one run, far above what it takes (about 2 minutes on 2 busy cores)


@pytest.fixture(scope="module")
def own_mesh(tmp_path_factory, mesh_config):
    """A Mesh of its own: the operator's operations change what the others rely on (PUT /admin/models disables a
    model, invites are created)."""
    process = MeshProcess(tmp_path_factory.mktemp("fuzz") / "data", mesh_config, env=SHARED_ADDRESS_LIMITS)
    process.start()
    yield process
    process.stop()


def schemathesis(mesh, account_token: str, *filters: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MESH_FUZZ_ACCOUNT_TOKEN": account_token,
        "MESH_FUZZ_OPERATOR_TOKEN": mesh.operator_token,
        "SCHEMATHESIS_HOOKS": "",
    }
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        "--checks",
        "all",
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--no-color",
        *filters,
        f"{mesh.url}/schema/openapi.json",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_SECONDS)


def passed(run: subprocess.CompletedProcess, phases: tuple[str, ...] = ("Coverage", "Fuzzing", "Stateful")) -> str:
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    for phase in phases:
        assert f"✅ {phase}" in output, output[-5000:]  # ran and passed, not skipped
    return output


def test_every_operation_keeps_the_promises_of_the_document(own_mesh):
    mesh = own_mesh
    account_id, token = sign_up(mesh)
    api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "5", "reason": "fuzz"},
    )
    started = time.monotonic()
    output = passed(schemathesis(mesh, token, "--exclude-path-regex", f"{SESSION_ENDING}|{STREAMS}"))
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) >= 38, output[-3000:]  # every operation but the two session-ending
    _, own_session = sign_up(mesh)
    # two operations and no link between them: no stateful scenario to run
    passed(schemathesis(mesh, own_session, "--include-path-regex", SESSION_ENDING), ("Coverage", "Fuzzing"))
    print(f"\nschemathesis took {time.monotonic() - started:.0f} s")
    assert api(mesh, "GET", "/api/keys", token).status_code == 200  # the operations ran with a live session
