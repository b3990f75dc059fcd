"""`mesh up` heals itself: a killed child (nats-server, the postmaster, the projection worker) is restarted, the
service comes back without anyone's help, and every answered request is billed exactly once; an unreachable
read model is a 503 in the error shape, not a 500."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from api.connections import POOL_TIMEOUT
from api.embedded import free_port
from api.postgres_server import PostgresServer
from domain.money import pico_to_usd
from tests import http_calls
from tests.e2e.conftest import DEFAULT_BACKGROUND, MeshProcess, events_after

pytestmark = pytest.mark.long(waits=True)  # scheduled first, beside a module that computes (tests/conftest.py)

RECOVERY_SECONDS = 45  # a killed child is back, and requests are served, within this
ZOMBIE_SECONDS = 10  # an ended child is reaped within this (the supervisor looks every 0.2 s, slower under load)
PROMPT_PICO_PER_TOKEN = 500_000_000  # acme/gpt-test: 0.5 USD per 1K prompt tokens
COMPLETION_PICO_PER_TOKEN = 1_500_000_000  # and 1.5 USD per 1K completion tokens
PLANNED_STOP = "stopping the projection worker"  # what mesh up logs when it restarts the worker beside a new PostgreSQL


def account(mesh: MeshProcess, credits: str = "100") -> tuple[dict, str]:
    session = http_calls.post(
        mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "long enough"}
    ).json()
    auth = {"authorization": f"Bearer {session['management_token']}"}
    granted = http_calls.post(
        f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
        headers={"authorization": f"Bearer {mesh.operator_token}"},
        json={"amount_usd": credits, "reason": "t"},
    )
    assert granted.status_code == 201, granted.text
    key = http_calls.post(mesh.url + "/api/keys", headers=auth, json={"label": "heal"}).json()["key"]
    return auth, key


def chat(mesh: MeshProcess, key: str, text: str) -> httpx.Response:
    body = {"model": "acme/gpt-test", "max_tokens": 20, "messages": [{"role": "user", "content": text}]}
    return http_calls.post(
        mesh.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30
    )


class Load:
    """One client sending priced requests one after another; keeps what each 200 answer says it used."""

    def __init__(self, mesh: MeshProcess, key: str):
        self.mesh, self.key = mesh, key
        self.served: dict[str, dict] = {}  # trace id -> usage of each 200
        self.refused: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                r = chat(self.mesh, self.key, f"request {i}")
            except httpx.HTTPError:
                self.refused.append(0)
                continue
            if r.status_code == 200:
                self.served[r.headers["x-mesh-trace-id"]] = r.json()["usage"]
            else:
                assert set(r.json()["error"]) >= {"message", "type", "code"}, r.text
                self.refused.append(r.status_code)
            time.sleep(0.02)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join(60)


def children(mesh: MeshProcess) -> dict[str, dict]:
    return {c["name"]: c for c in mesh.health(timeout=15).json()["children"]}


def zombies(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                rest = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(rest[1]) == pid and rest[0] == "Z":
                found.append(int(entry.name))
    return found


def wait_until(check, what: str, timeout: float = RECOVERY_SECONDS):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.1)


def kill_running(mesh, name: str) -> dict:
    """SIGKILL the child `name` while it runs; its status just before. A child may be between two lives when
    asked (the projection worker is restarted on purpose after PostgreSQL comes back): then ask again."""
    deadline = time.monotonic() + 30
    while True:
        before = children(mesh)[name]
        try:
            if before["state"] == "running":
                os.kill(before["pid"], signal.SIGKILL)
                return before
        except ProcessLookupError:
            pass
        assert time.monotonic() < deadline, f"{name} never running to be killed"
        time.sleep(0.2)


def kill_and_see_it_restarted(mesh, name: str) -> tuple[dict, dict]:
    """SIGKILL the child `name` and wait until the supervisor started it again; its status before and after.
    The projection worker stopped on purpose after PostgreSQL came back may end (exit code 0) just as it is
    killed: then it is killed again in its next life."""
    for _ in range(3):
        before = kill_running(mesh, name)
        wait_until(
            lambda: (c := children(mesh)[name])["restarts"] > before["restarts"] and c["state"] == "running",
            f"{name} restarted",
        )
        after = children(mesh)[name]
        if after["last_exit"] == "exited with code 0" and name == "projections" and PLANNED_STOP in mesh.output():
            continue
        assert after["restarts"] == before["restarts"] + 1, (before, after)
        assert after["last_exit"] == "killed by SIGKILL" and after["pid"] != before["pid"], (before, after)
        return before, after
    raise AssertionError(f"{name}: every kill met a planned restart")


def test_each_killed_child_comes_back_and_every_answer_is_billed_once(tmp_path, mesh_config):
    mesh = MeshProcess(tmp_path / "data", mesh_config, env=DEFAULT_BACKGROUND)
    mesh.start()
    try:
        auth, key = account(mesh)
        warm_up = chat(mesh, key, "warm up")
        assert warm_up.status_code == 200
        with Load(mesh, key) as load:
            for name in ("nats-server", "postgres", "projections"):
                head = mesh.health(timeout=15).json()["stream_head"]
                served = len(load.served)
                killed = time.monotonic()
                _, restarted = kill_and_see_it_restarted(mesh, name)
                wait_until(
                    lambda: http_calls.get(mesh.url + "/health", timeout=15).json()["status"] == "ok",
                    f"/health ok after killing {name}",
                )
                if name != "nats-server":  # the read models' processes come back at idle priority
                    pid = restarted["pid"]
                    wait_until(lambda: os.sched_getscheduler(pid) == os.SCHED_IDLE, f"{name} at idle priority")
                wait_until(lambda: len(load.served) > served + 5, f"requests served after killing {name}")
                balance = http_calls.get(mesh.url + "/api/billing/balance", headers=auth, timeout=15)
                assert balance.status_code == 200, balance.text
                print(f"\n{name}: back and serving {time.monotonic() - killed:.1f}s after kill -9")
                if name == "nats-server":  # budget leases are taken again once the current one is used up
                    wait_until(lambda: "key.budget_leased" in events_after(mesh, head), "a new lease", timeout=120)
                # a child that just ended is a zombie until the supervisor's next look; one that stays was never reaped
                seen = set(zombies(mesh.process.pid))
                wait_until(lambda: not seen & set(zombies(mesh.process.pid)), f"{seen} reaped", timeout=ZOMBIE_SECONDS)
        assert load.served and not [s for s in load.refused if s not in (429, 503)], load.refused

        spool = mesh.data_dir / "spool" / "usage.jsonl"
        wait_until(lambda: not spool.exists() or not spool.read_bytes().strip(), "the usage spool replayed")
        answered = [warm_up.json()["usage"], *load.served.values()]

        def billed() -> dict | None:
            spend = http_calls.get(mesh.url + "/api/billing/spend?group_by=key", headers=auth, timeout=15).json()
            return spend if spend["total_requests"] >= len(answered) else None

        spend = wait_until(billed, "every answered request billed")
        assert spend["total_requests"] == len(answered) and spend["data"][0]["errors"] == 0  # none twice
        cost = sum(
            u["prompt_tokens"] * PROMPT_PICO_PER_TOKEN + u["completion_tokens"] * COMPLETION_PICO_PER_TOKEN
            for u in answered
        )
        assert spend["total_spend_usd"] == pico_to_usd(cost)
        assert "killed by SIGKILL; starting it again" in mesh.output()
    finally:
        mesh.stop()


def test_an_unreachable_read_model_is_a_503_and_heals_when_it_returns(tmp_path, mesh_config):
    pg_dir, port = tmp_path / "external-pg", free_port()
    pg = PostgresServer(pg_dir, port=port).start()
    mesh = MeshProcess(tmp_path / "data", mesh_config, {"MESH_DATABASE_URL": pg.url})
    mesh.start()
    try:
        auth, key = account(mesh)
        assert chat(mesh, key, "before").status_code == 200
        _, other_key = account(mesh)  # not yet in the gateway's key cache
        pg.stop()
        down = http_calls.get(mesh.url + "/api/billing/balance", headers=auth, timeout=30)
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == "service_unavailable" and "read models" in error["message"]
        assert down.headers["retry-after"]
        assert chat(mesh, key, "cached key").status_code == 200  # the gateway needs no read model for it
        asked = time.monotonic()
        unknown = chat(mesh, other_key, "new key")
        assert unknown.status_code == 503 and unknown.json()["error"]["code"] == "service_unavailable"
        # known to be down by then: refused in about a second, not after the pool's whole timeout
        assert time.monotonic() - asked < POOL_TIMEOUT / 2
        health = mesh.health(timeout=30)
        assert health.status_code == 503 and health.json()["postgres"].startswith("unreachable")
        assert mesh.process.poll() is None

        pg = PostgresServer(pg_dir, port=port).start()
        wait_until(
            lambda: http_calls.get(mesh.url + "/api/billing/balance", headers=auth, timeout=15).status_code == 200,
            "the balance answers again",
        )
        assert chat(mesh, other_key, "new key").status_code == 200
        wait_until(lambda: http_calls.get(mesh.url + "/health", timeout=15).status_code == 200, "/health ok")
    finally:
        mesh.stop()
        pg.stop()
