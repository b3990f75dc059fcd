"""Log exports through `mesh up`: clients that open an export and stop reading do not take the database from
everyone else; an account runs one export at a time, and a stalled one ends after MESH_EXPORT_IDLE_SECONDS."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest

from tests import http_calls
from tests.e2e.conftest import MeshProcess
from tests.e2e.test_walking_skeleton import api, sign_up

IDLE_SECONDS = 8
# An export longer than what the sockets hold (about 2 MB on loopback even when the client's receive buffer is
# small), so that a client that stops reading leaves the server waiting to write.
ROWS = 6_000
STALLED = 21  # one more than the request pool's connections


@pytest.fixture(scope="module")
def mesh(tmp_path_factory, mesh_config):
    process = MeshProcess(
        tmp_path_factory.mktemp("exports") / "data",
        mesh_config,
        env={"MESH_FREE_RPM": "0", "MESH_EXPORT_IDLE_SECONDS": str(IDLE_SECONDS)},
    )
    process.start()
    yield process
    process.stop()


def new_key(mesh, token: str) -> str:
    r = api(mesh, "POST", "/api/keys", token, json={"label": "export", "default_model": "mesh/echo"})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def echo(client: httpx.Client, key: str) -> int:
    r = client.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"messages": [{"role": "user", "content": "hi"}]},
    )
    return r.status_code


@pytest.fixture(scope="module")
def exporter(mesh) -> str:
    """An account with ROWS request logs; its management token."""
    _, token = sign_up(mesh)
    key = new_key(mesh, token)
    with httpx.Client(base_url=mesh.url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: echo(client, key), range(ROWS)))
    assert statuses == [200] * ROWS
    deadline = time.monotonic() + 60
    while len(api(mesh, "GET", "/api/logs/export", token).content.splitlines()) < ROWS:
        assert time.monotonic() < deadline, "the logs did not catch up"
        time.sleep(0.5)
    return token


def stalled_export(mesh, token: str) -> socket.socket:
    """A client that asks for the export and reads nothing (a small receive buffer: the server fills it soon)."""
    url = urlsplit(mesh.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect((url.hostname, url.port))
    sock.sendall(
        f"GET /api/logs/export HTTP/1.1\r\nhost: {url.netloc}\r\nauthorization: Bearer {token}\r\n\r\n".encode()
    )
    return sock


def status_of(sock: socket.socket) -> int:
    sock.settimeout(10)
    return int(sock.recv(64).split(b" ")[1])


def test_stalled_exports_leave_the_api_answering_and_an_account_exports_once_at_a_time(mesh, exporter):
    _, other = sign_up(mesh)
    stalled = [stalled_export(mesh, exporter) for _ in range(STALLED)]
    try:
        time.sleep(1)  # the server has taken them all, and written what the sockets hold

        # token checks, a page and a chat completion (a new key: read from the database) all answer at once
        with httpx.Client(base_url=mesh.url, timeout=5) as client:
            assert client.get("/api/billing/balance", headers={"authorization": f"Bearer {other}"}).status_code == 200
            assert http_calls.get(mesh.url + "/keys", cookies={"mesh_session": other}, timeout=5).status_code == 200
            key = client.post(
                "/api/keys",
                headers={"authorization": f"Bearer {other}"},
                json={"label": "k", "default_model": "mesh/echo"},
            )
            assert key.status_code == 201, key.text
            assert echo(client, key.json()["key"]) == 200

        second = http_calls.get(
            mesh.url + "/api/logs/export", headers={"authorization": f"Bearer {exporter}"}, timeout=5
        )
        assert second.status_code == 429, second.text[:500]
        error = second.json()["error"]
        assert error["code"] == "export_in_progress" and error["type"] == "rate_limit_error", error
        assert "one runs at a time" in error["message"]
        assert sorted(status_of(sock) for sock in stalled) == [200] + [429] * (STALLED - 1)

        # the stalled export ends after the idle timeout: the account can export again, in full
        deadline = time.monotonic() + IDLE_SECONDS + 30
        while True:
            again = api(mesh, "GET", "/api/logs/export", exporter)
            if again.status_code == 200:
                break
            assert again.status_code == 429 and time.monotonic() < deadline, again.text[:500]
            time.sleep(0.5)
        assert len(again.content.splitlines()) == ROWS
    finally:
        for sock in stalled:
            sock.close()


def test_a_label_that_looks_like_a_formula_is_exported_as_text(mesh):
    """CSV injection: a spreadsheet opening the export shows the label, never runs it."""
    import csv
    import io

    _, token = sign_up(mesh)
    created = api(mesh, "POST", "/api/keys", token, json={"label": "=HYPERLINK(1)", "default_model": "mesh/echo"})
    assert created.status_code == 201, created.text
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        assert echo(client, created.json()["key"]) == 200
    deadline = time.monotonic() + 30
    while True:
        rows = list(csv.DictReader(io.StringIO(api(mesh, "GET", "/api/logs/export?format=csv", token).text)))
        if rows or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [row["key_label"] for row in rows] == ["'=HYPERLINK(1)"]
    jsonl = api(mesh, "GET", "/api/logs/export?format=jsonl", token).text
    assert '"key_label":"=HYPERLINK(1)"' in jsonl  # JSON is data, not a sheet: unchanged
