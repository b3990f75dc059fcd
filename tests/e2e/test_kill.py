"""kill -9 under load loses no billing: every answer the client received is billed exactly once after a restart.

`mesh up` (gateway, embedded NATS and PostgreSQL, projection worker) serves a priced model in front of a
zero-latency fake upstream at full speed (plain and streamed requests, and some to a provider that is down, whose
error answers record usage too), and is SIGKILLed, all its processes at once, mid-load. Restarted on the same
data dir, once its read models have caught up, every answer the client got is recorded once, every 200 billed,
and the balance is the credits minus what was billed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import nats
import openai
import psycopg

from api.embedded import free_port
from domain.events import usage_subject
from tests import http_calls
from tests.e2e.conftest import MeshProcess

IN_FLIGHT = 64
LOAD_SECONDS = 3.0
MIN_ANSWERED = 4 * IN_FLIGHT  # a floor, not a speed goal: the rate reached is printed (bench/ measures speed)
PROMPT = "how much is this"  # 4 words: the fake counts 4 prompt tokens
MAX_TOKENS = 5  # the fake answers this many words (5 completion tokens), whatever limit it is sent
CREDITS_USD = "1000"
PICO = 10**12
COST = (4 * 500 * PICO // 1000 + 5 * 1500 * PICO // 1000) // 1000  # at 0.5 / 1.5 USD per 1K tokens

UPSTREAM = """
import sys, uvicorn
from tests.fakes.openai_upstream import FakeOpenAI
fake = FakeOpenAI(reply_words=int(sys.argv[2]), api_key="sk-kill-test")
uvicorn.run(fake, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
"""


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (by /proc), children before grandchildren."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(0), [])
        found += children
        todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _request(key: str, model: str, stream: bool) -> bytes:
    body = json.dumps(
        {"model": model, "max_tokens": MAX_TOKENS, "stream": stream, "messages": [{"role": "user", "content": PROMPT}]}
    ).encode()
    return (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _drive(port: int, key: str, kill) -> tuple[dict[str, int], float]:
    """IN_FLIGHT keep-alive connections sending as fast as answers come (one in eight to the provider that is
    down, one in four streamed); `kill` after LOAD_SECONDS. Returns the trace ids of the whole answers received,
    with their status, and the seconds of load."""
    answered: dict[str, int] = {}
    failures: list[str] = []
    killed = asyncio.Event()

    async def worker(i: int) -> None:
        down, stream = i % 8 == 0, i % 4 == 1
        request, expected = _request(key, "acme/down" if down else "acme/priced", stream), 502 if down else 200
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not killed.is_set():
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
                status = int(head[0].split()[1])
                headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
                if "content-length" in headers:
                    body = await reader.readexactly(int(headers["content-length"]))
                else:  # chunked
                    body = b""
                    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                if status != expected or (stream and not body.endswith(b"data: [DONE]\n\n")):
                    failures.append(f"HTTP {status}: {body[-300:]!r}")  # a refusal would make the count meaningless
                    return
                answered[headers["x-mesh-trace-id"]] = status  # the whole answer is in: the client has it
        except (OSError, asyncio.IncompleteReadError):
            if not killed.is_set():
                raise
        finally:
            writer.close()

    async def killer() -> None:
        await asyncio.sleep(LOAD_SECONDS)
        kill()
        killed.set()

    started = time.monotonic()
    workers = [asyncio.create_task(worker(i)) for i in range(IN_FLIGHT)]
    await asyncio.gather(killer(), *workers)
    assert not failures, failures[:3]
    return answered, time.monotonic() - started


def test_kill_9_under_load_loses_no_billing(tmp_path):
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-c", UPSTREAM, str(upstream_port), str(MAX_TOKENS)], cwd=Path(__file__).parents[2]
    )
    config = tmp_path / "mesh.toml"
    config.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{upstream_port}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "acme/priced"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"

[providers.down]
kind = "openai-compatible"
base_url = "http://127.0.0.1:{free_port()}/v1"

[[models]]
id = "acme/down"
provider = "down"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
""")
    data = tmp_path / "data"
    env = {"ACME_API_KEY": "sk-kill-test"}
    mesh = MeshProcess(data, config, env)
    restarted = None
    try:
        mesh.start()
        session = http_calls.post(
            mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "long enough"}
        ).json()
        auth = {"authorization": f"Bearer {session['management_token']}"}
        http_calls.post(
            f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
            headers={"authorization": f"Bearer {mesh.operator_token}"},
            json={"amount_usd": CREDITS_USD, "reason": "kill test"},
        ).raise_for_status()
        key = http_calls.post(mesh.url + "/api/keys", headers=auth, json={"label": "load"}).json()["key"]
        gateway = mesh.process.pid
        victims: list[int] = []

        def kill() -> None:  # the gateway first, then everything it started, all in a moment
            victims.extend([gateway, *_descendants(gateway)])
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

        answered, seconds = asyncio.run(_drive(mesh.port, key, kill))
        mesh.process.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in victims) and time.monotonic() < deadline:
            time.sleep(0.05)
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in victims if _alive(pid)}
        assert not names, f"still running after SIGKILL: {names}"
        ok = {trace for trace, status in answered.items() if status == 200}
        print(
            f"\n{len(answered)} answers ({len(ok)} 200s) in {seconds:.1f} s ({len(answered) / seconds:.0f} req/s, "
            f"{IN_FLIGHT} in flight), then SIGKILL to {len(victims)} processes"
        )
        assert len(ok) >= MIN_ANSWERED and len(answered) > len(ok)

        restarted = MeshProcess(data, config, env)
        restart_seconds = restarted.start()
        began = time.monotonic()
        database_url = json.loads((data / "running.json").read_text())["database_url"]
        recorded: dict[str, tuple[int, int]] = {}  # trace id -> (http status, cost)
        deadline = time.monotonic() + 30
        with psycopg.connect(database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:  # the spool is replayed and the worker catches up
                rows = conn.execute(
                    "select trace_id, http_status, cost from logs where account_id = %s", (session["account_id"],)
                ).fetchall()
                recorded = {str(trace): (status, int(cost)) for trace, status, cost in rows}
                lag = [p["lag"] for p in restarted.health().json()["projections"]]
                if recorded.keys() >= answered.keys() and not any(lag):
                    break
                time.sleep(0.2)
        print(f"restarted in {restart_seconds:.1f} s; all recorded after {time.monotonic() - began:.1f} s more")
        unbilled = ok - recorded.keys()
        assert not unbilled, f"{len(unbilled)} of {len(ok)} answered 200s are on nobody's books"
        assert answered.keys() <= recorded.keys(), "an error answer left without its usage recorded"
        assert all(recorded[trace][0] == status for trace, status in answered.items())
        # the others recorded were in flight at the kill: done upstream and stored, their answers not yet received
        assert len(recorded) - len(answered) <= IN_FLIGHT
        billed = [cost for status, cost in recorded.values() if status == 200]
        assert set(billed) == {COST} and {cost for status, cost in recorded.values() if status != 200} == {0}

        async def in_the_log() -> int:  # usage events of the account in the stream: none twice
            nc = await nats.connect(json.loads((data / "running.json").read_text())["nats_url"])
            try:
                subject = usage_subject("MESH", session["account_id"])
                info = await nc.jetstream().stream_info("MESH", subjects_filter=subject)
                return sum((info.state.subjects or {}).values())
            finally:
                await nc.close()

        assert asyncio.run(in_the_log()) == len(recorded)
        balance = http_calls.get(restarted.url + "/api/billing/balance", headers=auth).json()
        assert Decimal(balance["balance_usd"]) == Decimal(CREDITS_USD) - Decimal(len(billed) * COST) / PICO

        # and it serves on: one more request through the official SDK, billed too
        client = openai.OpenAI(base_url=restarted.url + "/v1", api_key=key)
        raw = client.chat.completions.with_raw_response.create(
            model="acme/priced", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}]
        )
        assert raw.parse().usage.completion_tokens == MAX_TOKENS
        trace = raw.headers["x-mesh-trace-id"]
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while not conn.execute("select 1 from usage_recent where trace_id = %s", (trace,)).fetchone():
                assert time.monotonic() < deadline, "the request after the restart was not billed"
                time.sleep(0.1)
    finally:
        if restarted is not None:
            restarted.stop()
        mesh.stop()
        upstream.kill()
        upstream.wait()
