"""kill -9 under load loses no billing: every answer the client received is billed exactly once after a restart.

`mesh up` (gateway, embedded NATS and PostgreSQL, projection worker) serves a priced model in front of a
zero-latency fake upstream at full speed, and is SIGKILLed, all its processes at once, mid-load. Restarted on the
same data dir, once its read models have caught up, every 200 the client got is billed once, and the balance is
the credits minus what was billed.
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

import httpx
import nats
import openai
import psycopg

from api.embedded import free_port
from domain.events import usage_subject
from tests.e2e.conftest import MeshProcess

IN_FLIGHT = 64
LOAD_SECONDS = 4.0
MIN_ANSWERED = 500  # a floor, not a speed goal: the rate reached is printed (bench/ measures speed)
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


async def _drive(port: int, key: str, kill) -> tuple[list[str], float]:
    """IN_FLIGHT keep-alive connections sending as fast as answers come; `kill` after LOAD_SECONDS. Returns the
    trace ids of the 200s received and the seconds of load."""
    body = json.dumps({"model": "acme/priced", "max_tokens": MAX_TOKENS,
                       "messages": [{"role": "user", "content": PROMPT}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
               f"authorization: Bearer {key}\r\ncontent-length: {len(body)}\r\n\r\n").encode() + body
    answered: list[str] = []
    failures: list[str] = []
    killed = asyncio.Event()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not killed.is_set():
                writer.write(request)
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
                status = int(head[0].split()[1])
                headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
                if "content-length" in headers:
                    await reader.readexactly(int(headers["content-length"]))
                else:  # chunked
                    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                        await reader.readexactly(size + 2)
                    await reader.readuntil(b"\r\n")
                if status != 200:  # a refusal would make the count meaningless
                    failures.append(f"HTTP {status}")
                    return
                answered.append(headers["x-mesh-trace-id"])  # the whole answer is in: the client has it
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
    workers = [asyncio.create_task(worker()) for _ in range(IN_FLIGHT)]
    await asyncio.gather(killer(), *workers)
    assert not failures, failures[:3]
    return answered, time.monotonic() - started


def test_kill_9_under_load_loses_no_billing(tmp_path):
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port), str(MAX_TOKENS)], cwd=Path(__file__).parents[2])
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
""")
    data = tmp_path / "data"
    env = {"ACME_API_KEY": "sk-kill-test"}
    mesh = MeshProcess(data, config, env)
    restarted = None
    try:
        mesh.start()
        session = httpx.post(mesh.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com",
                                                             "password": "long enough"}).json()
        auth = {"authorization": f"Bearer {session['management_token']}"}
        httpx.post(f"{mesh.url}/admin/accounts/{session['account_id']}/credits",
                   headers={"authorization": f"Bearer {mesh.operator_token}"},
                   json={"amount_usd": CREDITS_USD, "reason": "kill test"}).raise_for_status()
        key = httpx.post(mesh.url + "/api/keys", headers=auth, json={"label": "load"}).json()["key"]
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
        print(f"\n{len(answered)} answered 200s in {seconds:.1f} s ({len(answered) / seconds:.0f} req/s, "
              f"{IN_FLIGHT} in flight), then SIGKILL to {len(victims)} processes")
        assert len(answered) >= MIN_ANSWERED
        assert len(set(answered)) == len(answered)

        restarted = MeshProcess(data, config, env)
        restarted.start()
        database_url = json.loads((data / "running.json").read_text())["database_url"]
        billed: dict[str, int] = {}
        deadline = time.monotonic() + 30
        with psycopg.connect(database_url, autocommit=True) as conn:
            while time.monotonic() < deadline:  # the spool is replayed and the worker catches up
                rows = conn.execute("select trace_id, cost from usage where account_id = %s",
                                    (session["account_id"],)).fetchall()
                billed = {str(trace): int(cost) for trace, cost in rows}
                lag = [p["lag"] for p in httpx.get(restarted.url + "/health").json()["projections"]]
                if billed.keys() >= set(answered) and not any(lag):
                    break
                time.sleep(0.2)
        unbilled = set(answered) - billed.keys()
        assert not unbilled, f"{len(unbilled)} of {len(answered)} answered requests are on nobody's books"
        # the others billed were in flight at the kill: done upstream and stored, their answers not yet received
        assert len(billed) - len(answered) <= IN_FLIGHT
        assert set(billed.values()) == {COST}

        async def in_the_log() -> int:  # usage events of the account in the stream: none twice
            nc = await nats.connect(json.loads((data / "running.json").read_text())["nats_url"])
            try:
                subject = usage_subject("MESH", session["account_id"])
                info = await nc.jetstream().stream_info("MESH", subjects_filter=subject)
                return sum((info.state.subjects or {}).values())
            finally:
                await nc.close()

        assert asyncio.run(in_the_log()) == len(billed)
        balance = httpx.get(restarted.url + "/api/billing/balance", headers=auth).json()
        assert Decimal(balance["balance_usd"]) == Decimal(CREDITS_USD) - Decimal(len(billed) * COST) / PICO

        # and it serves on: one more request through the official SDK, billed too
        client = openai.OpenAI(base_url=restarted.url + "/v1", api_key=key)
        raw = client.chat.completions.with_raw_response.create(
            model="acme/priced", max_tokens=MAX_TOKENS, messages=[{"role": "user", "content": PROMPT}])
        assert raw.parse().usage.completion_tokens == MAX_TOKENS
        trace = raw.headers["x-mesh-trace-id"]
        with psycopg.connect(database_url, autocommit=True) as conn:
            deadline = time.monotonic() + 10
            while not conn.execute("select 1 from usage where trace_id = %s", (trace,)).fetchone():
                assert time.monotonic() < deadline, "the request after the restart was not billed"
                time.sleep(0.1)
    finally:
        if restarted is not None:
            restarted.stop()
        mesh.stop()
        upstream.kill()
        upstream.wait()
