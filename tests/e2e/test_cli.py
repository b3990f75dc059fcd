"""`mesh up` as an operator meets it: restarts keep data, and start-up problems are one clear line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from api.embedded import free_port
from api.projection_process import PostgresPriority
from tests import http_calls
from tests.e2e.conftest import DEFAULT_BACKGROUND, SUITE_SETTINGS, MeshProcess

pytestmark = pytest.mark.long  # scheduled first (tests/conftest.py)


def run_mesh(env: dict[str, str], tmp_path, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "up"],
        env=mesh_env(env, tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mesh_env(env: dict[str, str], tmp_path) -> dict[str, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    full.update({"MESH_DATA_DIR": str(tmp_path / "data"), **env})
    return full


def run_at_once(
    commands: list[tuple[str, ...]], env: dict[str, str], python: tuple[str, ...] = ()
) -> list[subprocess.CompletedProcess]:
    """`mesh <command>` for each command, all started together (each may wait out NATS's connect timeout)."""
    started = [
        subprocess.Popen(
            [sys.executable, *python, "-m", "api.cli", *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in commands
    ]
    finished = []
    for process in started:
        stdout, stderr = process.communicate(timeout=60)
        finished.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return finished


def one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mesh: ") and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        one_line_error(run_mesh({"MESH_PORT": str(port)}, tmp_path), f"cannot listen on 127.0.0.1:{port}")


def test_an_unreachable_nats_is_one_line(tmp_path):
    result = run_mesh({"MESH_PORT": str(free_port()), "MESH_NATS_URL": f"nats://127.0.0.1:{free_port()}"}, tmp_path)
    one_line_error(result, "cannot reach NATS")


def test_an_unreachable_postgres_is_one_line_without_the_password(tmp_path):
    url = f"postgresql://mesh:hunter2@127.0.0.1:{free_port()}/mesh"
    result = run_mesh({"MESH_PORT": str(free_port()), "MESH_DATABASE_URL": url}, tmp_path)
    one_line_error(result, "cannot reach PostgreSQL")
    assert "hunter2" not in result.stderr


def test_every_command_says_an_unreachable_server_in_one_line(tmp_path):
    """The commands run beside a `mesh up` or against MESH_NATS_URL / MESH_DATABASE_URL, not only `mesh up` itself
    (run at once: each waits out NATS's connect timeout)."""
    env = mesh_env(
        {
            "MESH_NATS_URL": f"nats://127.0.0.1:{free_port()}",
            "MESH_DATABASE_URL": f"postgresql://mesh:hunter2@127.0.0.1:{free_port()}/mesh",
        },
        tmp_path,
    )
    commands = {
        ("projections",): "cannot reach NATS",
        ("projections", "quarantine"): "cannot reach NATS",
        ("rebuild", "billing"): "cannot reach NATS",
        ("audit",): "cannot reach NATS",
        ("audit", "verify"): "cannot reach NATS",
        ("operators", "list"): "cannot reach PostgreSQL",
    }
    for command, result in zip(commands, run_at_once(list(commands), env)):
        one_line_error(result, commands[command])
        assert "hunter2" not in result.stderr, command


def test_the_worker_and_the_maintenance_commands_never_import_the_web_framework(tmp_path):
    """`mesh projections` (started at every `mesh up`), `mesh rebuild` and `mesh audit` serve no HTTP: Litestar
    would cost each start about 0.14 s of CPU. Each runs until it finds NATS unreachable, so every import it makes
    before connecting is listed (`-X importtime`)."""
    env = mesh_env(
        {"MESH_NATS_URL": f"nats://127.0.0.1:{free_port()}", "MESH_DATABASE_URL": "postgresql:///x"}, tmp_path
    )
    commands = [("projections",), ("rebuild", "billing"), ("audit",)]
    for result in run_at_once(commands, env, python=("-X", "importtime")):
        lines = result.stderr.splitlines()
        imported = [line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")]
        assert "api.connections" in imported, result.args  # it got as far as connecting
        assert not [name for name in imported if name.split(".")[0] == "litestar"], result.args


def test_a_bad_config_is_one_line(tmp_path):
    config = tmp_path / "mesh.toml"
    config.write_text('[[models]]\nid = "x/y"\nprovider = "nowhere"\nupstream = "y"\n')
    result = run_mesh({"MESH_PORT": str(free_port()), "MESH_CONFIG": str(config)}, tmp_path)
    one_line_error(result, "provider 'nowhere', which is not declared")


def test_a_restart_keeps_every_account_key_and_balance(tmp_path, mesh_config):
    mesh = MeshProcess(tmp_path / "data", mesh_config, env=DEFAULT_BACKGROUND)
    try:
        first_start = mesh.start()
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        session = http_calls.post(mesh.url + "/api/signup", json={"email": email, "password": "long enough"}).json()
        auth = {"authorization": f"Bearer {session['management_token']}"}
        operator = {"authorization": f"Bearer {mesh.operator_token}"}
        granted = http_calls.post(
            f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
            headers=operator,
            json={"amount_usd": "2.5", "reason": "test"},
        )
        assert granted.status_code == 201
        key = http_calls.post(mesh.url + "/api/keys", headers=auth, json={"label": "kept"}).json()
        token = mesh.operator_token
        assert "Mesh is up" in mesh.output() and token in mesh.output()
        assert mesh.stop() == 0

        restart = mesh.start()
        assert mesh.operator_token == token  # generated once, then kept
        assert mesh.output().count(token) == 1  # and shown once: the restart names its file instead
        assert str(mesh.data_dir.resolve() / "operator_token") in mesh.output().split("Mesh is up")[-1]
        balance = http_calls.get(mesh.url + "/api/billing/balance", headers=auth).json()
        assert balance["balance_usd"] == "2.500000"
        keys = http_calls.get(mesh.url + "/api/keys", headers=auth).json()["data"]
        assert [k["id"] for k in keys] == [key["id"]]
        chat = http_calls.post(
            mesh.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key['key']}"},
            json={"model": "mesh/echo", "messages": [{"role": "user", "content": "still here"}]},
        )
        assert chat.json()["choices"][0]["message"]["content"] == "still here"
        deadline = time.monotonic() + 10
        while True:  # the usage event of that request is applied within moments
            health = mesh.health().json()
            if all(p["lag"] == 0 for p in health["projections"]) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert health["status"] == "ok" and all(p["lag"] == 0 for p in health["projections"])
        # the read models' processes take only the CPU that requests leave over; NATS is not held back
        children = _children(mesh.process.pid)
        names = {name for name, _ in children}
        assert {"nats-server", "postgres"} <= names and any(name.startswith("python") for name in names), names
        for name, pid in children:
            expected = os.SCHED_OTHER if name == "nats-server" else os.SCHED_IDLE
            assert os.sched_getscheduler(pid) == expected, name
        # ... and run on every CPU but the first (by default), which the gateway always finds free of their bursts
        allowed = sorted(os.sched_getaffinity(0))
        background = set(allowed[1:] if len(allowed) >= 2 else allowed)
        postmaster = next(pid for name, pid in children if name == "postgres")
        for pid in [pid for _, pid in children] + [pid for _, pid in _children(postmaster)]:
            for thread in Path(f"/proc/{pid}/task").iterdir():  # nats-server's threads too
                assert os.sched_getaffinity(int(thread.name)) == background, (pid, thread.name)
        assert os.sched_getaffinity(mesh.process.pid) == set(allowed)
        if PostgresPriority(postmaster=0).own_group is not None:  # autogroups are in effect here
            # PostgreSQL's children each call setsid(): the worker's connections and the maintenance processes
            # get the lowest share across autogroups; the I/O workers and other connections keep theirs
            titled = [(title, _autogroup_nice(pid)) for title, pid in _postgres_children(postmaster)]
            nice = {title: n for title, n in titled if not title.startswith("postgres postgres")}
            assert nice["checkpointer"] == nice["walwriter"] == 19, titled
            assert all(n == 0 for title, n in nice.items() if title.startswith("io worker")), titled
            connections = [n for title, n in titled if title.startswith("postgres postgres")]
            assert 19 in connections and 0 in connections, titled
        # stopped as a service manager stops a unit (systemd's KillMode=control-group): every process at once, so
        # nats-server may be gone before the others leave it; each leaves without a traceback
        for pid in [mesh.process.pid, *(pid for _, pid in children)]:
            os.kill(pid, signal.SIGTERM)
        assert mesh.process.wait(30) == 128 + signal.SIGTERM  # what `mesh up` exits with on SIGTERM
        assert "Traceback" not in mesh.output(), mesh.output()[-3000:]
        assert "starting it again" not in mesh.output(), mesh.output()[-3000:]  # the children were told to stop
        print(f"\nmesh up healthy after {first_start:.2f}s on a fresh data dir, {restart:.2f}s on restart")
    finally:
        mesh.stop()


BUSY_LOOP = "while True: pass"  # a process that wants a CPU all the time, at normal priority
START_UNDER_LOAD_SECONDS = 60  # far above what `mesh up` takes here with a CPU shared (a few seconds)


def test_mesh_up_starts_while_other_work_keeps_its_cpu_busy(tmp_path, mesh_config):
    """The projection worker and PostgreSQL take idle priority once started, not before: started idle, neither would
    get a CPU while any other process wants it (their imports, recovery, first connections), and `mesh up`, which
    waits for both, would not start until the machine had a CPU free."""
    cpu = str(max(os.sched_getaffinity(0)))  # one CPU for all: the busy loop, `mesh up` and its children
    busy = subprocess.Popen(["taskset", "-c", cpu, sys.executable, "-c", BUSY_LOOP])
    command = ("taskset", "-c", cpu, sys.executable, "-m", "api.cli")
    mesh = MeshProcess(tmp_path / "data", mesh_config, env=DEFAULT_BACKGROUND, command=command)
    try:
        mesh.launch()
        deadline = time.monotonic() + START_UNDER_LOAD_SECONDS
        while "Mesh is up" not in mesh.output():
            assert mesh.process.poll() is None, mesh.output()[-2000:]
            assert time.monotonic() < deadline, f"not started in {START_UNDER_LOAD_SECONDS} s: {mesh.output()[-2000:]}"
            time.sleep(0.1)
        # started: now they take only what the rest leaves over (the worker lowers itself once it has started,
        # which on a CPU this busy may come a moment after `mesh up` is done)
        children = dict(_children(mesh.process.pid))
        assert os.sched_getscheduler(children["postgres"]) == os.SCHED_IDLE
        assert all(os.sched_getscheduler(pid) == os.SCHED_IDLE for _, pid in _children(children["postgres"]))
        worker = next(pid for name, pid in children.items() if name.startswith("python"))
        threads = [int(thread.name) for thread in Path(f"/proc/{worker}/task").iterdir()]
        deadline = time.monotonic() + START_UNDER_LOAD_SECONDS
        while not all(os.sched_getscheduler(thread) == os.SCHED_IDLE for thread in threads):
            assert time.monotonic() < deadline, "the projection worker never lowered its priority"
            time.sleep(0.1)
        busy.kill()
        busy.wait()
        assert mesh.health().json()["status"] == "ok"
    finally:
        busy.kill()
        mesh.stop()


def test_the_read_models_keep_an_ordinary_share_when_the_operator_says_so(mesh):
    """MESH_BACKGROUND_PRIORITY=normal, as the suite's shared Mesh runs: started, PostgreSQL and the projection
    worker are not lowered."""
    assert SUITE_SETTINGS["MESH_BACKGROUND_PRIORITY"] == "normal"
    children = dict(_children(mesh.process.pid))
    worker = next(pid for name, pid in children.items() if name.startswith("python"))
    for pid in (children["postgres"], worker, *(pid for _, pid in _children(children["postgres"]))):
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER, pid


def test_an_operator_token_from_the_environment_is_never_printed(tmp_path, mesh_config):
    token = "mo-" + uuid.uuid4().hex
    mesh = MeshProcess(tmp_path / "data", mesh_config, env={"MESH_OPERATOR_TOKEN": token})
    try:
        mesh.start()
        assert mesh.health().status_code == 200  # it is the operator token all the same
        shown = mesh.output()
        assert token not in shown and "operator token:    from MESH_OPERATOR_TOKEN (not shown)" in shown, shown
        assert not (mesh.data_dir / "operator_token").exists()
    finally:
        mesh.stop()


def test_trusted_proxies_that_are_not_addresses_are_refused_in_one_line(tmp_path):
    result = run_mesh({"MESH_PORT": str(free_port()), "MESH_TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}, tmp_path)
    one_line_error(result, "MESH_TRUSTED_PROXIES takes IP addresses or CIDR networks")
    assert "'proxy.internal'" in result.stderr


def test_rebuild_while_serving_swaps_in_an_identical_read_model(mesh):
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    session = http_calls.post(mesh.url + "/api/signup", json={"email": email, "password": "long enough"}).json()
    auth = {"authorization": f"Bearer {session['management_token']}"}
    http_calls.post(
        f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"amount_usd": "3", "reason": "t"},
    )
    before = http_calls.get(mesh.url + "/api/billing/balance", headers=auth).json()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_DATA_DIR"] = str(mesh.data_dir)
    result = subprocess.run(
        [sys.executable, "-m", "api.cli", "rebuild", "billing"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "events" in result.stdout and "now in service" in result.stdout  # progress, then the swap
    after = http_calls.get(mesh.url + "/api/billing/balance", headers=auth).json()
    assert after["balance_usd"] == before["balance_usd"] == "3.000000"
    assert http_calls.get(mesh.url + "/health").json()["status"] == "ok"


def _postgres_children(postmaster: int) -> list[tuple[str, int]]:
    """(process title without "postgres: ", pid) of each child of the postmaster."""
    found = []
    for _, pid in _children(postmaster):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode().strip()
        except OSError:
            continue
        found.append((title.removeprefix("postgres: "), pid))
    return found


def _autogroup_nice(pid: int) -> int:
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def _children(pid: int) -> list[tuple[str, int]]:
    """(executable name, pid) of each direct child process, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name, rest = (entry / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            if int(rest.split()[1]) == pid:
                found.append((name.split("(", 1)[1].split()[0].rstrip(":"), int(entry.name)))
    return found


def test_mesh_up_locks_its_servers_and_upgrades_an_open_data_dir(tmp_path, mesh_config):
    import asyncio
    import json
    import stat

    import nats
    import psycopg
    import pytest

    from tests.integration.test_embedded_servers import OLD_HBA, refused

    data = tmp_path / "data"
    mesh = MeshProcess(data, mesh_config)
    try:
        mesh.start()
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        session = http_calls.post(mesh.url + "/api/signup", json={"email": email, "password": "long enough"}).json()
        auth = {"authorization": f"Bearer {session['management_token']}"}
        http_calls.post(
            f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
            headers={"authorization": f"Bearer {mesh.operator_token}"},
            json={"amount_usd": "4", "reason": "t"},
        )
        assert mesh.stop() == 0
        # what an older Mesh left behind: PostgreSQL trusting everyone, NATS without a password, an open data dir
        (data / "postgres" / "pg_hba.conf").write_text(OLD_HBA)
        (data / "postgres.password").unlink()
        (data / "nats.password").unlink()
        data.chmod(0o755)

        mesh.start()
        assert http_calls.get(mesh.url + "/api/billing/balance", headers=auth).json()["balance_usd"] == "4.000000"
        running = data / "running.json"
        urls = json.loads(running.read_text())
        passwords = [(data / name).read_text() for name in ("postgres.password", "nats.password")]
        for path in [running, data / "postgres.password", data / "nats.password", data / "operator_token"]:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        # this user only (as root, the group of the PostgreSQL system user may pass through, nothing more)
        assert stat.S_IMODE(data.stat().st_mode) in (0o700, 0o710)
        assert passwords[0] in urls["database_url"] and passwords[1] in urls["nats_url"]
        port = urls["database_url"].rsplit(":", 1)[1].split("/")[0]
        assert "no password supplied" in refused(f"host=127.0.0.1 port={port} user=postgres dbname=postgres")
        with psycopg.connect(urls["database_url"]) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        nats_port = urls["nats_url"].rsplit(":", 1)[1]

        async def anonymous() -> None:
            await nats.connect(
                f"nats://127.0.0.1:{nats_port}", allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2
            )

        with pytest.raises(Exception, match="Authorization Violation"):
            asyncio.run(anonymous())
        # `mesh rebuild` beside it finds the servers and their passwords
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["MESH_DATA_DIR"] = str(data)
        result = subprocess.run(
            [sys.executable, "-m", "api.cli", "rebuild", "directory"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert mesh.stop() == 0
        log = mesh.output() + result.stdout + result.stderr
        assert not [p for p in passwords if p in log]  # never printed nor logged
    finally:
        mesh.stop()
