"""Runs the real product (`mesh up`, embedded NATS and PostgreSQL) as a subprocess, and fakes upstreams."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import httpx
import pytest

from api.embedded import free_port, wait_for_port
from tests import http_calls
from tests.conftest import TEST_KDF
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import BackgroundServer

UPSTREAM_KEY = "sk-upstream-secret-do-not-log"


MESH_FROM_CHECKOUT = (sys.executable, "-m", "api.cli")
# First on the PYTHONPATH of the Meshes run from the checkout: packages the test extra brings and Mesh never installs
# fail to import there as in a real install (tests/e2e/as_installed/README.md)
AS_INSTALLED = Path(__file__).parent / "as_installed"

# The suite runs several Meshes at once beside their tests, on a machine they keep busy. By default each keeps its
# read models, NATS and PostgreSQL off the first CPU (MESH_BACKGROUND_CPUS=auto), which is the gateway's alone on a
# server of its own: here all of theirs would queue on the other CPUs while the first sat idle. And its read models
# and PostgreSQL take only the CPU time nothing else wants (MESH_BACKGROUND_PRIORITY=idle): here a test waiting for
# a read model would wait on every other test. The tests of the defaults unset these (a setting given as None).
SUITE_SETTINGS = {"MESH_BACKGROUND_CPUS": "all", "MESH_BACKGROUND_PRIORITY": "normal"}
DEFAULT_BACKGROUND = {"MESH_BACKGROUND_CPUS": None, "MESH_BACKGROUND_PRIORITY": None}  # as a Mesh of its own runs


class MeshProcess:
    """`mesh up` as a subprocess: by default this checkout's; `command` and `cwd` run another install of it."""

    def __init__(
        self,
        data_dir: Path,
        config: Path,
        env: dict[str, str | None] | None = None,
        args: tuple[str, ...] = (),
        command: tuple[str, ...] = MESH_FROM_CHECKOUT,
        cwd: Path | None = None,
    ):
        self.data_dir = data_dir
        self.config = config
        self.args = args
        self.command = command
        self.cwd = cwd
        self.port = free_port()  # kept across restarts
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.process: subprocess.Popen | None = None
        self.log = data_dir.parent / f"mesh-{self.port}.log"

    def start(self, timeout: float = 60) -> float:
        """Start `mesh up`; return seconds until /health says ok."""
        started = time.monotonic()
        process = self.launch()
        while time.monotonic() - started < timeout:
            if process.poll() is not None:
                raise RuntimeError(f"mesh up exited with {process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if http_calls.get(self.url + "/health", timeout=1).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mesh up not healthy after {timeout}s: {self.log.read_text()[-2000:]}")

    def launch(self) -> subprocess.Popen:
        """Start the `mesh up` process, without waiting for it to answer."""
        if (
            self.command == MESH_FROM_CHECKOUT
            and not self.data_dir.exists()
            and not self.extra_env.get("MESH_DATABASE_URL")
        ):
            seed_postgres(self.data_dir)
        env = {
            **os.environ,
            **SUITE_SETTINGS,
            "MESH_DATA_DIR": str(self.data_dir),
            "MESH_PORT": str(self.port),
            "MESH_CONFIG": str(self.config),
            "ACME_API_KEY": UPSTREAM_KEY,
            "MESH_PASSWORD_KDF_LOG_N": str(TEST_KDF.log_n),
            **self.extra_env,
        }
        for name in ("MESH_NATS_URL", "MESH_DATABASE_URL", "MESH_STREAM", "MESH_OPERATOR_TOKEN"):
            if name not in self.extra_env:  # embedded servers unless the test names external ones
                env.pop(name, None)
        env = {name: value for name, value in env.items() if value is not None}
        if self.command == MESH_FROM_CHECKOUT:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AS_INSTALLED), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [*self.command, "up", *self.args],
            env=env,
            cwd=self.cwd,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
        )
        return self.process

    def stop(self) -> int:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        return self.process.returncode if self.process else 0

    @property
    def operator_token(self) -> str:
        return self.extra_env.get("MESH_OPERATOR_TOKEN") or (self.data_dir / "operator_token").read_text().strip()

    def output(self) -> str:
        return self.log.read_text()

    def health(self, timeout: float = 10) -> httpx.Response:
        """GET /health with the operator token: the detailed answer (the public one is the status alone)."""
        return http_calls.get(
            self.url + "/health", headers={"authorization": f"Bearer {self.operator_token}"}, timeout=timeout
        )


def seed_postgres(data_dir: Path) -> None:
    """Give a new data directory the embedded PostgreSQL cluster (and its password) of a Mesh that has run once,
    copied from one made per test process: each Mesh then starts as on its second day, without its own initdb
    (about 0.45 CPU s and as long again of the suite's wall time per Mesh). A first start on an empty directory,
    initdb included, is what the Meshes started by another command run: test_wheel's installed wheel, and
    test_cli's start beside a busy CPU."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from api.postgres_server import PostgresServer

        root = Path(tempfile.mkdtemp(prefix="mesh-postgres-template-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        PostgresServer(root / "postgres").start().stop()
        _TEMPLATE = root
    data_dir.mkdir(mode=0o700, parents=True)
    for name in ("postgres", "postgres.password"):
        subprocess.run(["cp", "-a", str(_TEMPLATE / name), str(data_dir / name)], check=True)


_TEMPLATE: Path | None = None  # this test process's cluster to copy


@contextmanager
def own_mesh(tmp_path_factory, config: Path, name: str, env: dict[str, str]) -> Iterator[MeshProcess]:
    """A Mesh of a module's own, started with `env` (the settings its tests are about), stopped after."""
    process = MeshProcess(tmp_path_factory.mktemp(name) / "data", config, env=env)
    process.start()
    try:
        yield process
    finally:
        process.stop()


PAIR_STREAM_BYTES = 1024**3  # a gateway pair's log on the shared nats-server: far more than its tests write


@contextmanager
def gateway_pair(
    tmp_path_factory, nats_url: str, postgres_server, mesh_toml: str, name: str
) -> Iterator[list[MeshProcess]]:
    """Two `mesh up` processes with `mesh_toml`, on one NATS stream and one database of their own; only the first
    runs projections."""
    import psycopg

    database = f"{name}_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'create database "{database}"')
    config = tmp_path_factory.mktemp(name) / "mesh.toml"
    config.write_text(mesh_toml)
    env = {
        "MESH_NATS_URL": nats_url,
        "MESH_DATABASE_URL": postgres_server.url.rsplit("/", 1)[0] + "/" + database,
        "MESH_STREAM": name.upper() + uuid.uuid4().hex[:8].upper(),
        # The shared nats-server holds the other tests' streams too, within a storage limit it takes from the disk
        # free when it starts: a log reserving the default (up to 10 GB) could leave the next too little
        "MESH_STREAM_MAX_BYTES": str(PAIR_STREAM_BYTES),
        "MESH_OPERATOR_TOKEN": "mo-test-" + uuid.uuid4().hex,
    }
    processes = [
        MeshProcess(tmp_path_factory.mktemp("gw") / "data", config, env, args) for args in [(), ("--no-projections",)]
    ]
    for p in processes:
        p.start()
    yield processes
    for p in processes:
        p.stop()


@pytest.fixture(scope="session")
def fake_openai():
    fake = FakeOpenAI(reply_words=7, api_key=UPSTREAM_KEY)
    with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def upstream(request):
    """A fake OpenAI-compatible upstream of the module's own (its tests change how it answers), without an API key;
    its replies are the module's `UPSTREAM_REPLY_WORDS` words long (7 unless it says)."""
    fake = FakeOpenAI(reply_words=getattr(request.module, "UPSTREAM_REPLY_WORDS", 7))
    with BackgroundServer(fake) as server:
        fake.url = server.url
        yield fake


@pytest.fixture(scope="module")
def localstripe(tmp_path_factory):
    """localstripe (a stateful fake Stripe server that also serves its own stripe.js) on a free port."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("localstripe") / "localstripe.log", "wb")
    # --from-scratch: not the state another localstripe left in /tmp/localstripe.pickle (a torn file kills start-up)
    process = subprocess.Popen(
        [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for_port("127.0.0.1", port, 30, process)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(10)


def paid_by_localstripe(localstripe: str, webhook_secret: str, **env: str) -> dict[str, str]:
    """The settings of a Mesh whose payments go to localstripe, with the common top-up limits and bank details."""
    return {
        "MESH_STRIPE_SECRET_KEY": "sk_test_mesh",
        "MESH_STRIPE_WEBHOOK_SECRET": webhook_secret,
        "MESH_STRIPE_API_BASE": localstripe,
        "MESH_TOPUP_MIN_USD": "5",
        "MESH_TOPUP_MAX_USD": "500",
        "MESH_BANK_ACCOUNT_DETAILS": "IBAN DE00 1234 5678 9012 3456 78",
        **env,
    }


def send_webhooks(localstripe: str, mesh: "MeshProcess", webhook_secret: str) -> None:
    """localstripe signs and sends its events to this Mesh's webhook."""
    http_calls.post(
        f"{localstripe}/_config/webhooks/mesh",
        data={"url": f"{mesh.url}/api/billing/stripe/webhook", "secret": webhook_secret},
    ).raise_for_status()


@pytest.fixture(scope="session")
def mesh_config(tmp_path_factory, fake_openai) -> Path:
    path = tmp_path_factory.mktemp("config") / "mesh.toml"
    path.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{fake_openai.url}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "acme/gpt-test"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 256
aliases = ["{SHARED_ALIAS}", "{OPENAI_NAMED_ALIAS}"]
""")
    return path


SHARED_ALIAS = "gpt-test"  # what a client that takes bare model names sends for acme/gpt-test
OPENAI_NAMED_ALIAS = "gpt-4o-mini"  # for a client that takes only OpenAI's own model names (llama-index's OpenAI)

SHARED_ADDRESS_LIMITS = {"MESH_SIGNUPS_PER_ADDRESS": "100000", "MESH_LOGIN_FAILURES_PER_ADDRESS": "100000"}


@pytest.fixture(scope="session")
def mesh(tmp_path_factory, mesh_config):
    # every test signs up from 127.0.0.1: the per-address limits are for tests of their own (test_accounts.py)
    process = MeshProcess(tmp_path_factory.mktemp("mesh") / "data", mesh_config, env=SHARED_ADDRESS_LIMITS)
    process.startup_seconds = process.start()
    yield process
    process.stop()


class FundedKey(NamedTuple):
    account_id: str
    token: str  # the account's management token
    key: str  # the API key itself
    created: dict[str, Any]  # the key as POST /api/keys answered


def funded_key(mesh: MeshProcess, usd: str = "5", **key_fields: Any) -> FundedKey:
    """A new account granted `usd` USD by the operator, and one API key of it made with `key_fields`
    (label "k" unless they name one)."""
    signed_up = http_calls.post(
        mesh.url + "/api/signup",
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"},
        timeout=30,
    )
    assert signed_up.status_code == 201, signed_up.text
    account_id, token = signed_up.json()["account_id"], signed_up.json()["management_token"]
    granted = http_calls.post(
        f"{mesh.url}/admin/accounts/{account_id}/credits",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"amount_usd": usd, "reason": "test"},
        timeout=30,
    )
    assert granted.status_code == 201, granted.text
    created = http_calls.post(
        mesh.url + "/api/keys",
        headers={"authorization": f"Bearer {token}"},
        json={"label": "k", **key_fields},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    return FundedKey(account_id, token, created.json()["key"], created.json())


# Events a running Mesh appends on its own (an idle gateway hands back its budget leases, a busy one renews them).
BACKGROUND_TOPICS = {"account.lease_settled", "key.lease_settled", "account.lease_extended", "key.lease_extended"}


def events_after(mesh: MeshProcess, position: int) -> list[str]:
    """The topics of the events appended after `position`, leaving out Mesh's own background bookkeeping."""
    return [topic for topic, _ in stored_events(mesh, position) if topic not in BACKGROUND_TOPICS]


def stored_events(mesh: MeshProcess, position: int) -> list[tuple[str, bytes]]:
    """(topic, stored data) of every event in the stream after `position`."""
    import asyncio
    import json

    import nats

    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]

    async def read() -> list[tuple[str, bytes]]:
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().stream_info("MESH")
            events = []
            for seq in range(position + 1, info.state.last_seq + 1):
                msg = await nc.jetstream().get_msg("MESH", seq)
                events.append(((msg.headers or {}).get("Mesh-Topic", ""), msg.data or b""))
            return events
        finally:
            await nc.close()

    return asyncio.run(read())
