"""Subscribers of the event log (GET /api/events, /admin/events) against `mesh up`, with real traffic through a
fake upstream: an account gets its own events only, public (no hashes, no lease bookkeeping), followed live,
resumed after `Last-Event-ID`, filtered by `types`, with heartbeats and a cap on open streams. The SSE client is
examples/sse_client.py, run as a user would import it."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import httpx
import openai
import pytest

from domain.public_events import ACCOUNT_EVENT_NAMES, PUBLIC_EVENT_NAMES
from examples.sse_client import Event, events
from tests import http_calls
from tests.e2e.conftest import SHARED_ADDRESS_LIMITS, funded_key, own_mesh, stored_events
from tests.e2e.test_walking_skeleton import api

HEARTBEAT = 0.5  # MESH_EVENTS_HEARTBEAT_SECONDS of this module's Mesh
LEASE_EVENTS = {"account.budget_leased", "key.budget_leased", "account.lease_settled", "key.lease_settled"}
WAIT = 30.0  # seconds a test waits for events it caused


@pytest.fixture(scope="module")
def events_mesh(tmp_path_factory, mesh_config):
    env = {**SHARED_ADDRESS_LIMITS, "MESH_EVENTS_HEARTBEAT_SECONDS": str(HEARTBEAT)}
    with own_mesh(tmp_path_factory, mesh_config, "events", env) as process:
        yield process


def chat(mesh, key: str) -> str:
    """One chat completion through the gateway with the openai SDK; its trace id."""
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="acme/gpt-test", messages=[{"role": "user", "content": "hi"}], max_tokens=20
    )
    return raw.headers["x-mesh-trace-id"]


def read(mesh, token: str, until: Callable[[list[Event]], bool], timeout: float = WAIT, **kwargs) -> list[Event]:
    """The events of one stream (examples/sse_client.py) until `until` holds for those received; fails after
    `timeout` seconds without."""
    got: list[Event] = []
    done: queue.Queue = queue.Queue()

    def run() -> None:
        try:
            for event in events(mesh.url, token, **kwargs):
                got.append(event)
                if until(got):
                    break
            done.put(None)
        except Exception as exc:  # handed to the test
            done.put(exc)

    threading.Thread(target=run, daemon=True).start()
    try:
        failure = done.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"not there after {timeout}s; received {[(e.id, e.name) for e in got]}")
    if failure is not None:
        raise failure
    return list(got)


def usage_of(trace: str) -> Callable[[list[Event]], bool]:
    return lambda got: any(e.name == "usage.recorded" and e.data["data"]["trace_id"] == trace for e in got)


def test_an_account_gets_its_own_public_events_only(events_mesh):
    mesh = events_mesh
    mine, other = funded_key(mesh), funded_key(mesh)
    other_trace = chat(mesh, other.key)
    rotated = api(mesh, "POST", f"/api/keys/{mine.created['id']}/rotate", mine.token, json={"grace_seconds": 0})
    assert rotated.status_code == 200, rotated.text
    trace = chat(mesh, rotated.json()["key"])
    got = read(mesh, mine.token, usage_of(trace), last_event_id=0)
    names = [e.name for e in got]
    for name in (
        "account.registered",
        "account.credits_granted",
        "key.created",
        "key.rotated",
        "usage.recorded",
    ):
        assert name in names, names
    assert set(names) <= set(ACCOUNT_EVENT_NAMES) and not set(names) & LEASE_EVENTS, names
    assert [e.id for e in got] == sorted({e.id for e in got})  # in log order, each once
    assert all(e.id == e.data["position"] and e.name == e.data["name"] for e in got)
    text = json.dumps([e.data for e in got])
    assert other.account_id not in text and other.created["id"] not in text and other_trace not in text
    assert "hash" not in text and mine.key not in text and rotated.json()["key"] not in text and mine.token not in text
    registered = next(e for e in got if e.name == "account.registered")
    assert set(registered.data["data"]) == {"timestamp", "email", "token_expires_at"}
    created = next(e for e in got if e.name == "key.created")
    assert created.data["aggregate_id"] == mine.created["id"]
    assert created.data["data"]["account_id"] == mine.account_id and "key_hash" not in created.data["data"]
    usage = got[-1].data["data"]
    assert usage["key_id"] == mine.created["id"] and usage["model"] == "acme/gpt-test" and usage["cost"] > 0
    # the log does hold what was left out: the leases that admitted the requests, the hashes
    stored = {topic for topic, _ in stored_events(mesh, 0)}
    assert {"account.budget_leased", "key.budget_leased"} <= stored


def test_a_stream_resumes_after_the_last_event_id(events_mesh):
    mesh = events_mesh
    mine = funded_key(mesh)
    chat(mesh, mine.key)
    everything = read(mesh, mine.token, lambda seen: any(e.name == "usage.recorded" for e in seen), last_event_id=0)
    assert len(everything) >= 4
    # what EventSource sends on reconnecting: the events after that position, the same as the first time
    resumed = read(mesh, mine.token, lambda seen: len(seen) == len(everything) - 2, last_event_id=everything[1].id)
    assert resumed == everything[2:]
    # `from` is the first position sent
    with http_calls.stream(
        "GET",
        f"{mesh.url}/api/events",
        params={"from": everything[2].id},
        headers={"authorization": f"Bearer {mine.token}"},
        timeout=WAIT,
    ) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        first = next(line for line in answer.iter_lines() if line.startswith("id:"))
    assert int(first[3:]) == everything[2].id


def test_a_new_request_reaches_an_open_stream(events_mesh):
    mesh = events_mesh
    mine = funded_key(mesh)
    results: queue.Queue = queue.Queue()
    opened = threading.Event()

    def follow() -> None:
        with http_calls.stream(
            "GET",
            f"{mesh.url}/api/events",
            params={"types": "usage.recorded"},
            headers={"authorization": f"Bearer {mine.token}"},
            timeout=WAIT,
        ) as answer:
            opened.set()  # the answer started: the stream's start (the log's head) is fixed
            for line in answer.iter_lines():
                if line.startswith("data:"):
                    results.put(json.loads(line[5:]))
                    return

    threading.Thread(target=follow, daemon=True).start()
    assert opened.wait(WAIT)
    trace = chat(mesh, mine.key)
    event = results.get(timeout=WAIT)
    assert event["name"] == "usage.recorded" and event["data"]["trace_id"] == trace


def test_types_filter_and_bad_input(events_mesh):
    mesh = events_mesh
    mine = funded_key(mesh)
    trace = chat(mesh, mine.key)
    got = read(mesh, mine.token, usage_of(trace), types="usage.recorded,key.created", last_event_id=0)
    assert {e.name for e in got} == {"usage.recorded", "key.created"}
    headers = {"authorization": f"Bearer {mine.token}"}
    for types in ("usage.recorded,nope.happened", "key.budget_leased", "model.price_changed"):
        refused = http_calls.get(f"{mesh.url}/api/events", params={"types": types}, headers=headers, timeout=WAIT)
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["code"] == "invalid_event_type" and error["param"] == "types"
        assert types.split(",")[-1] in error["message"] and "usage.recorded" in error["message"]
    for bad in ("x1", "-3"):
        refused = http_calls.get(f"{mesh.url}/api/events", headers={**headers, "last-event-id": bad}, timeout=WAIT)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_last_event_id"
    assert http_calls.get(f"{mesh.url}/api/events", params={"from": "-1"}, headers=headers).status_code == 400


def test_heartbeats_keep_a_quiet_stream_alive(events_mesh):
    mesh = events_mesh
    mine = funded_key(mesh)
    beats, started = 0, time.monotonic()
    with http_calls.stream(
        "GET",
        f"{mesh.url}/api/events",
        params={"types": "topup.expired"},
        headers={"authorization": f"Bearer {mine.token}"},
        timeout=WAIT,
    ) as answer:
        for line in answer.iter_lines():
            beats += line == ": heartbeat"
            if beats == 4:
                break
    assert time.monotonic() - started >= 3 * HEARTBEAT * 0.9  # one at the start, then one per interval


def test_open_streams_are_capped_per_account(events_mesh):
    mesh = events_mesh
    mine = funded_key(mesh)
    headers = {"authorization": f"Bearer {mine.token}"}
    clients = [httpx.Client(timeout=WAIT) for _ in range(5)]
    streams = []
    try:
        for client in clients:
            stream = client.stream("GET", f"{mesh.url}/api/events", headers=headers)
            answer = stream.__enter__()
            assert answer.status_code == 200
            lines = answer.iter_lines()  # kept: a line iterator dropped unfinished closes its connection
            next(lines)  # the first heartbeat: the stream holds its slot
            streams.append((stream, lines))
        refused = http_calls.get(f"{mesh.url}/api/events", headers=headers, timeout=WAIT)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_streams"
        other = funded_key(mesh)  # another account is not held back
        with http_calls.stream(
            "GET", f"{mesh.url}/api/events", headers={"authorization": f"Bearer {other.token}"}, timeout=WAIT
        ) as answer:
            assert answer.status_code == 200
        streams.pop()[0].__exit__(None, None, None)
        deadline = time.monotonic() + WAIT
        while True:  # the server frees the slot once it sees the client gone
            with http_calls.stream("GET", f"{mesh.url}/api/events", headers=headers, timeout=WAIT) as answer:
                if answer.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream's slot was never freed"
            time.sleep(0.1)
    finally:
        for stream, _ in streams:
            stream.__exit__(None, None, None)
        for client in clients:
            client.close()


def test_who_may_subscribe(events_mesh):
    mesh = events_mesh
    mine, other = funded_key(mesh), funded_key(mesh)
    traces = [chat(mesh, mine.key), chat(mesh, other.key)]
    assert http_calls.get(f"{mesh.url}/api/events", timeout=WAIT).status_code == 401
    assert http_calls.get(f"{mesh.url}/api/events", headers={"authorization": "Bearer mt-nope"}).status_code == 401
    assert http_calls.get(f"{mesh.url}/api/events", headers={"authorization": f"Bearer {mine.key}"}).status_code == 403
    forbidden = http_calls.get(f"{mesh.url}/admin/events", headers={"authorization": f"Bearer {mine.token}"})
    assert forbidden.status_code == 403
    # the dashboard's session cookie (a browser's EventSource sends no Authorization header)
    with http_calls.stream(
        "GET", f"{mesh.url}/api/events", cookies={"mesh_session": mine.token}, timeout=WAIT
    ) as answer:
        assert answer.status_code == 200
    # the operator: every account's, the operator's own too
    seen = read(
        mesh,
        mesh.operator_token,
        lambda got: {t for t in traces} <= {e.data["data"].get("trace_id") for e in got},
        last_event_id=0,
        path="/admin/events",
    )
    names = {e.name for e in seen}
    assert names <= set(PUBLIC_EVENT_NAMES) and not names & LEASE_EVENTS
    assert {mine.account_id, other.account_id} <= {e.data["data"].get("account_id") for e in seen}
    assert "hash" not in json.dumps([e.data for e in seen])


ROOT = Path(__file__).resolve().parents[2]


class Example:
    """An example script of examples/ run as a user runs it, its output read line by line."""

    def __init__(self, script: str, *args: str, env: dict[str, str]):
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / script), *args],
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = WAIT) -> list[str]:
        """The lines printed up to the first that holds `text`."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            try:
                self.lines.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"{text!r} not printed after {timeout}s: {self.lines}")
        return self.lines

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def log_entry(mesh, token: str, trace: str) -> dict:
    deadline = time.monotonic() + WAIT
    while True:
        found = api(mesh, "GET", f"/api/logs/{trace}", token)
        if found.status_code == 200 or time.monotonic() > deadline:
            assert found.status_code == 200, found.text
            return found.json()
        time.sleep(0.1)


def test_the_example_nats_subscriber_prints_each_usage_event_once_across_restarts(events_mesh):
    mesh = events_mesh
    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]
    mine = funded_key(mesh)
    first = [chat(mesh, mine.key), chat(mesh, mine.key)]
    durable = f"test-{uuid.uuid4().hex[:8]}"
    run = Example("subscriber.py", "--durable", durable, env={"MESH_NATS_URL": nats_url})
    try:
        printed = run.until(first[0]) and run.until(first[1])
    finally:
        run.stop()
    line = next(line for line in printed if first[0] in line)
    entry = log_entry(mesh, mine.token, first[0])
    assert line == (f"trace={first[0]} key={mine.created['id']} model=acme/gpt-test cost_usd={entry['cost_usd']}"), line
    later = chat(mesh, mine.key)
    again = Example("subscriber.py", "--durable", durable, env={"MESH_NATS_URL": nats_url})
    try:
        resumed = again.until(later)
    finally:
        again.stop()
    assert not any(trace in line for line in resumed for trace in first), resumed  # its position was kept
    assert sum(later in line for line in resumed) == 1


def recorded(position_file: Path, line: str) -> None:
    """Wait until the client recorded the position of the event it printed on `line` (printed, then recorded:
    stopped between the two, it prints that event again)."""
    deadline = time.monotonic() + WAIT
    while position_file.read_text() != line.split()[0]:
        assert time.monotonic() < deadline, f"the position of {line!r} was never recorded"
        time.sleep(0.05)


def test_the_example_sse_client_resumes_from_its_position_file(events_mesh, tmp_path):
    mesh = events_mesh
    mine = funded_key(mesh)
    position_file = tmp_path / "position.txt"
    position_file.write_text(str(api(mesh, "GET", "/api/billing/balance", mine.token).json()["as_of"]["position"]))
    env = {"MESH_URL": mesh.url, "MESH_TOKEN": mine.token}
    args = ("--types", "usage.recorded", "--position-file", str(position_file))
    earlier = chat(mesh, mine.key)
    run = Example("sse_client.py", *args, env=env)
    try:
        printed = run.until(earlier)
        recorded(position_file, printed[-1])
    finally:
        run.stop()
    assert f"usage.recorded trace={earlier} key={mine.created['id']} model=acme/gpt-test" in printed[-1]
    later = chat(mesh, mine.key)
    again = Example("sse_client.py", *args, env=env)
    try:
        resumed = again.until(later)
        recorded(position_file, resumed[-1])
    finally:
        again.stop()
    assert not any(earlier in line for line in resumed), resumed
