"""Session-wide real servers: nats-server (JetStream) and PostgreSQL from the wheels, on free loopback ports; and
each test's tier (unit, integration, e2e) marked from its directory, so `pytest -m unit` runs one tier."""

from __future__ import annotations

import compileall
import os
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from api.embedded import NatsServer
from api.postgres_server import PostgresServer
from domain.credentials import MIN_KDF_LOG_N, password_kdf
from tests import http_calls


# What a password costs in the suite: the cheapest an operator may choose (MESH_PASSWORD_KDF_LOG_N), where
# production's default (N = 2**17) takes about 0.4 s of CPU per sign-up or log-in. Only the tests of the KDF itself
# run at production's cost (tests/unit/test_credentials.py, test_command_contract.py; test_config.py pins it).
TEST_KDF = password_kdf(MIN_KDF_LOG_N)
http_calls.share_tls()  # the SDKs' clients, made by the hundred, without an SSL context each (tests/http_calls.py)
TIERS = ("unit", "integration", "e2e")  # the directories under tests/, each a marker of the same name
TESTS = Path(__file__).parent
PACKAGES = ("domain", "commands", "projections", "gateway", "api", "tests")  # what the suite and its Meshes import


def write_bytecode() -> None:
    """Bytecode for the checkout's packages, once, as pip writes it for an installed Mesh; and the test modules'
    rewritten bytecode kept. Where PYTHONDONTWRITEBYTECODE is set (this project's development machine sets it), each
    Mesh process the suite starts would compile Mesh's modules afresh, and each worker rewrite and compile every
    test module. compileall writes whatever the variable says; the files go to the checkout's __pycache__ folders,
    which git ignores."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller, before it starts the workers
        for package in PACKAGES:
            compileall.compile_dir(TESTS.parent / package, quiet=1)
    sys.dont_write_bytecode = False  # pytest keeps a rewritten test module only where Python may write bytecode


write_bytecode()


# Workers beyond one per CPU: test modules spend much of their time waiting (for a rate window to turn, a restart,
# a timeout they test), which leaves CPUs idle with one worker each; the extra workers run in those waits.
EXTRA_WORKERS = 2


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`--numprocesses=auto`: the CPUs this process may run on, plus EXTRA_WORKERS (--maxprocesses caps it)."""
    return len(os.sched_getaffinity(0)) + EXTRA_WORKERS


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = item.path.relative_to(TESTS).parts if item.path.is_relative_to(TESTS) else ()
        if parts and parts[0] in TIERS and not any(item.get_closest_marker(tier) for tier in TIERS):
            item.add_marker(parts[0])
    # Longest first: xdist hands out whole modules (--dist=loadfile) in this order, so the modules marked `long`,
    # then the rest of e2e, start first and the short ones fill the gaps at the end instead of one long module
    # running alone. The sort is stable: a module's tests stay together and in order.
    long_order = _long_modules_in_turn(items)
    items.sort(key=lambda item: _schedule(item, long_order))


def _long_modules_in_turn(items: list[pytest.Item]) -> dict[Path, int]:
    """The long modules' order: one that mostly waits (`long(waits=True)`: a rate window, a restart, a node coming
    back) after each that computes, so the waits run beside work instead of together, leaving the CPUs idle."""
    waits: dict[Path, bool] = {}
    for item in items:
        marker = item.get_closest_marker("long")
        if marker is not None:
            waits.setdefault(item.path, bool(marker.kwargs.get("waits")))
    computing = sorted(path for path, waiting in waits.items() if not waiting)
    waiting = sorted(path for path, waiting in waits.items() if waiting)
    return {**{path: 2 * i for i, path in enumerate(computing)}, **{path: 2 * i + 1 for i, path in enumerate(waiting)}}


def _schedule(item: pytest.Item, long_order: dict[Path, int]) -> tuple[int, int]:
    if item.path in long_order:
        return 0, long_order[item.path]
    return 1 + next((i for i, tier in enumerate(reversed(TIERS)) if item.get_closest_marker(tier)), len(TIERS)), 0


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def nats_server(servers_dir):
    server = NatsServer(servers_dir / "nats").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture(scope="session")
def postgres_server(servers_dir):
    server = PostgresServer(servers_dir / "pg").start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres_server) -> str:
    """A fresh, empty database per test, on the shared server."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def stream_name() -> str:
    """A fresh stream name per test, so tests never see each other's events."""
    return "T" + uuid.uuid4().hex[:10].upper()
