"""What Mesh adds in front of an upstream: latency, throughput and CPU per request, beside the same mock called
directly.

    python -m bench.gateway                                   # defaults: 3 s per cell, 1/16/64 in flight, 0 and 20 ms
    python -m bench.gateway --duration 1 --concurrency 1,16   # a quick run
    python -m bench.gateway --profile /tmp/mesh.prof          # Mesh under cProfile (slower): prints its hot spots
    python -m bench.gateway --one-cpu                         # the whole stack on CPU 0, as on a 1-vCPU server

Processes (each its own, so none shares an event loop with another):
  * this script: starts the others, samples CPU with psutil, prints the table;
  * a mock OpenAI-compatible upstream: a raw asyncio HTTP/1.1 server (keep-alive, uvloop when installed) answering
    POST /v1/chat/completions with a fixed chat.completion (with usage), or for "stream": true with a short SSE
    stream (role chunk, 3 content chunks, finish chunk, a usage chunk when stream_options.include_usage, [DONE]).
    Upstream model "model" answers at once, "model-slow" after --latency-ms;
  * `mesh up` (one server worker; its embedded NATS and PostgreSQL are its child processes) with a temp data dir and a
    temp mesh.toml declaring provider `bench` and the models `bench/model` and `bench/model-slow`;
  * a load generator: N concurrent workers, each on its own keep-alive connection, for --duration seconds (after
    --warmup seconds not counted) or --requests requests, whichever comes first. `--client raw` (default) is a
    minimal asyncio HTTP/1.1 client (10-60 µs CPU per request); `--client httpx` uses httpx.AsyncClient, which
    here costs 0.4 ms per request at 1 in flight and 4 ms at 64 (httpcore's pool walks every connection, several
    times, per request) and so measures itself rather than the gateway (see the "client" column);
  * LiteLLM proxy (if the `litellm` command is installed), one worker, against the same mock, for the ratios.

`--one-cpu` runs `mesh up` as `taskset -c 0 mesh up` with MESH_BACKGROUND_CPUS=all: the gateway, NATS, PostgreSQL
and the projection worker share the first CPU, as on a 1-vCPU server; the mock, the load generator (and LiteLLM)
run on the other CPUs, standing for the clients and the provider elsewhere.

Columns: p50/p99 latency of one whole request (for streams: until [DONE]), "+p50/+p99" what the gateway adds over
the direct call at the same in-flight count, CPU time per request of the gateway process ("gw CPU", Mesh: the
`mesh up` Python process: API and gateway) and of its helper processes ("helpers": NATS, PostgreSQL and the
projection worker, which reads every usage event into the billing read model), the
load generator and the mock. The CPU is read after the gateway has gone quiet, so work done after the responses
(publishing and projecting usage events) is counted; the gateway's idle use (timers, polling), measured once before
the cells, is subtracted.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CREATED = 1_700_000_000


# --------------------------------------------------------------------------------------------- the mock upstream


def _mock_responses() -> dict[tuple[bool, bool], bytes]:
    """(stream, include_usage) -> the whole HTTP response, built once."""
    import json

    def dump(obj) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    usage = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    completion = dump(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": "model",
            "system_fingerprint": None,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello from the mock."},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
    )
    plain = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: keep-alive\r\n\r\n" % len(completion)
    ) + completion

    def chunk(choices, **extra) -> bytes:
        return dump(
            {
                "id": "chatcmpl-bench",
                "object": "chat.completion.chunk",
                "created": CREATED,
                "model": "model",
                "choices": choices,
                **extra,
            }
        )

    def delta(d, finish=None):
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    events = [chunk(delta({"role": "assistant", "content": ""}))]
    events += [chunk(delta({"content": word})) for word in ("Hello", " from the", " mock.")]
    events.append(chunk(delta({}, "stop")))
    streams = {}
    for include_usage in (False, True):
        datas = events + ([chunk([], usage=usage)] if include_usage else []) + [b"[DONE]"]
        body = b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in (b"data: " + d + b"\n\n" for d in datas))
        streams[include_usage] = (
            (
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
            )
            + body
            + b"0\r\n\r\n"
        )
    return {(False, False): plain, (False, True): plain, (True, False): streams[False], (True, True): streams[True]}


NOT_FOUND = (
    b'HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 21\r\n\r\n{"error":"not found"}'
)


def _mock_main(conn, latency_ms: float) -> None:
    """The mock upstream's process: binds a free loopback port, sends it through `conn`, serves until terminated."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    import msgspec

    class Request(msgspec.Struct):
        model: str = ""
        stream: bool = False
        stream_options: dict | None = None

    decode = msgspec.json.Decoder(Request).decode
    responses = _mock_responses()
    delay = latency_ms / 1000
    parent = os.getppid()

    class Protocol(asyncio.Protocol):
        __slots__ = ("transport", "buf", "loop")

        def connection_made(self, transport):
            self.transport = transport
            self.buf = bytearray()
            self.loop = asyncio.get_running_loop()

        def data_received(self, data):
            buf = self.buf
            buf += data
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                i = head.find(b"\r\ncontent-length:")
                length = (
                    int(head[i + 17 : head.find(b"\r\n", i + 2) if head.find(b"\r\n", i + 2) > 0 else None])
                    if i >= 0
                    else 0
                )
                if i < 0 and b"\r\ntransfer-encoding:" in head:  # not used by any client here
                    self.transport.write(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                    self.transport.close()
                    return
                if len(buf) < end + 4 + length:
                    return
                body = bytes(buf[end + 4 : end + 4 + length])
                del buf[: end + 4 + length]
                close = b"\r\nconnection: close" in head
                if not head.startswith(b"post /v1/chat/completions"):
                    self._write(NOT_FOUND, close)
                    continue
                try:
                    request = decode(body)
                except msgspec.DecodeError:
                    self._write(NOT_FOUND, True)
                    return
                include_usage = bool(request.stream_options and request.stream_options.get("include_usage"))
                reply = responses[request.stream, include_usage]
                if delay and request.model.endswith("-slow"):
                    self.loop.call_later(delay, self._write, reply, close)
                else:
                    self._write(reply, close)

        def _write(self, data, close):
            if not self.transport.is_closing():
                self.transport.write(data)
                if close:
                    self.transport.close()

    async def serve():
        server = await asyncio.get_running_loop().create_server(Protocol, "127.0.0.1", 0, backlog=2048)
        conn.send(server.sockets[0].getsockname()[1])
        while os.getppid() == parent:  # exit with the parent, however it ends
            await asyncio.sleep(1)

    _run(serve())


def _run(coro):
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --------------------------------------------------------------------------------------------- the load generator


class _RawConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive client connection: one request at a time, whole response read."""

    def __init__(self) -> None:
        self.transport = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("server closed the connection"))

    def data_received(self, data):
        self.buf += data
        if self.waiter is not None and not self.waiter.done():
            try:
                if self._complete():
                    self.waiter.set_result(None)
            except Exception as exc:  # a malformed response
                self.waiter.set_exception(exc)

    def _complete(self) -> bool:
        buf = self.buf
        if self.body_at < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(buf[:end]).lower()
            self.status = int(head[9:12])
            self.body_at = self.pos = end + 4
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self.length = int(head[i + 17 : j if j > 0 else None])
            elif b"\r\ntransfer-encoding: chunked" not in head:
                raise ConnectionError("response has neither content-length nor chunked encoding")
        if self.length >= 0:
            return len(buf) >= self.body_at + self.length
        pos = self.pos
        while True:  # walk the chunks
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return False
            size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
            if size == 0:
                return buf.find(b"\r\n\r\n", eol) >= 0  # the empty trailer
            if len(buf) < eol + 2 + size + 2:
                self.pos = pos
                return False
            pos = eol + 2 + size + 2

    async def request(self, payload: bytes) -> tuple[int, bytes]:
        self.buf.clear()
        self.body_at = self.length = -1
        self.status = 0
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(payload)
        await self.waiter
        return self.status, bytes(self.buf[self.body_at :])


async def _cell(spec: dict) -> dict:
    """One measurement: `concurrency` workers on `url` for warmup + duration seconds (or `requests` requests)."""
    loop = asyncio.get_running_loop()
    host, port = spec["host"], spec["port"]
    body, stream, concurrency = spec["body"], spec["stream"], spec["concurrency"]
    marker = spec.get("marker") or (b"[DONE]" if stream else b'"usage"')  # what a complete answer holds
    headers = {"content-type": "application/json", "authorization": f"Bearer {spec['key']}"}
    payload = (
        f"POST {spec['path']} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {spec['key']}\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body
    client = None
    if spec["client"] == "httpx":
        import httpx

        client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency), timeout=60
        )
        url = f"http://{host}:{port}{spec['path']}"

        async def connect():
            return None

        async def call(_conn):
            if stream:
                async with client.stream("POST", url, content=body, headers=headers) as response:
                    data = b"".join([part async for part in response.aiter_raw()])
                return response.status_code, data, None
            response = await client.post(url, content=body, headers=headers)
            return response.status_code, response.content, None
    else:

        async def connect():
            _, protocol = await loop.create_connection(_RawConnection, host, port)
            return protocol

        async def call(conn):
            if conn is None or conn.closed:
                conn = await connect()
            status, data = await conn.request(payload)
            return status, data, conn

    perf = time.perf_counter
    started_cpu = time.process_time()
    t0 = perf()
    measure_from = t0 + spec["warmup"]
    stop_at = measure_from + spec["duration"] if spec["duration"] > 0 else math.inf
    limit = spec["requests"] or math.inf
    latencies: list[float] = []
    stretch = spec.get("window")  # seconds: also report each such stretch of the measured time on its own
    by_window: dict[int, list[float]] = {}
    state = {"started": 0, "total": 0, "errors": 0, "sample": None, "last": measure_from, "sent": 0}
    rate = spec.get("rate")  # requests a second, paced (open loop) instead of each worker's next at once

    async def worker():
        conn = await connect()
        while True:
            if rate:
                due = t0 + state["sent"] / rate
                state["sent"] += 1
                await asyncio.sleep(max(0.0, due - perf()))
            begin = perf()
            if begin >= stop_at:
                break
            measured = begin >= measure_from
            if measured:
                if state["started"] >= limit:
                    break
                state["started"] += 1
            try:
                status, data, conn = await call(conn)
                ok = status == 200 and marker in data
                problem = None if ok else f"HTTP {status}: {data[:300]!r}"
            except Exception as exc:
                conn, ok, problem = None, False, f"{type(exc).__name__}: {exc}"
            end = perf()
            state["total"] += 1
            if not ok:
                state["errors"] += 1
                state["sample"] = state["sample"] or problem
                await asyncio.sleep(0.01)
                continue
            if measured:
                latencies.append(end - begin)
                state["last"] = max(state["last"], end)
                if stretch:
                    by_window.setdefault(int((end - measure_from) // stretch), []).append(end - begin)
        if conn is not None and getattr(conn, "transport", None) is not None:
            conn.transport.close()

    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        if client is not None:
            await client.aclose()
    cpu = time.process_time() - started_cpu
    latencies.sort()
    n = len(latencies)
    window = state["last"] - measure_from

    def pct(q: float, values: list[float] = latencies) -> float:
        return values[max(0, math.ceil(q * len(values)) - 1)] * 1000 if values else float("nan")

    windows = []
    for index in sorted(by_window):
        values = sorted(by_window[index])
        windows.append({"n": len(values), "p50": pct(0.5, values), "p99": pct(0.99, values), "max": values[-1] * 1000})
    return {
        "windows": windows,
        "n": n,
        "rps": n / window if window > 0 else float("nan"),
        "p50": pct(0.5),
        "p99": pct(0.99),
        "total": state["total"],
        "errors": state["errors"],
        "sample": state["sample"],
        "client_cpu_us": cpu / max(1, state["total"]) * 1e6,
    }


def _loadgen_main(conn) -> None:
    """The load generator's process: runs the cells it is sent, answers with their results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            spec = conn.recv()
        except EOFError:
            return
        if spec is None:
            return
        try:
            conn.send(_run(_cell(spec)))
        except Exception as exc:
            conn.send({"failed": f"{type(exc).__name__}: {exc}"})


# --------------------------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In a child (preexec_fn): get SIGTERM if this script dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Processes:
    """Everything this script started, stopped on the way out (also on Ctrl-C and SIGTERM)."""

    def __init__(self) -> None:
        self.popens: list[tuple[str, subprocess.Popen, list]] = []  # (name, process, its descendants)
        self.children: list[multiprocessing.Process] = []

    def popen(self, name: str, cmd: list[str], env: dict, log: Path, cpus: set[int] | None = None) -> subprocess.Popen:
        # In the bench's own session (a process group of its own, for Ctrl-C), as a service started from this
        # shell would be: the kernel then weighs the server's background processes (idle priority under
        # `mesh up`) against the load generator and the mock, instead of giving each session an equal share.
        def setup() -> None:
            _die_with_parent()
            if cpus is not None:  # as `taskset`: the process and all it starts stay on these CPUs
                os.sched_setaffinity(0, cpus)

        process = subprocess.Popen(
            cmd,
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=setup,
        )
        self.popens.append((name, process, []))
        return process

    def remember_descendants(self, process: subprocess.Popen) -> None:
        import psutil

        for i, (name, p, _) in enumerate(self.popens):
            if p is process:
                try:
                    self.popens[i] = (name, p, psutil.Process(p.pid).children(recursive=True))
                except psutil.Error:
                    pass

    def stop(self) -> None:
        import psutil

        for name, process, descendants in reversed(self.popens):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # `mesh up` stops its embedded servers on the way out
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    print(f"{name} did not stop within 30 s; killing it", file=sys.stderr)
                    process.kill()
                    process.wait()
            for child in descendants:  # only if it could not stop them itself
                try:
                    if child.is_running():
                        child.kill()
                except psutil.Error:
                    pass
        for child in self.children:
            if child.is_alive():
                child.terminate()
                child.join(5)
                if child.is_alive():
                    child.kill()
                    child.join()


def cell_spec(
    host: str,
    port: int,
    key: str,
    model: str,
    stream: bool,
    concurrency: int,
    duration: float,
    warmup: float,
    requests: int = 0,
    client: str = "raw",
    window: float | None = None,
    rate: float | None = None,
) -> dict:
    """What the load generator runs: chat completions of `model` on `host`:`port` (see `_cell`); with `rate`, that
    many a second, paced, the workers only carrying them."""
    return {
        "host": host,
        "port": port,
        "path": "/v1/chat/completions",
        "key": key,
        "body": _body(model, stream),
        "stream": stream,
        "concurrency": concurrency,
        "duration": duration,
        "warmup": warmup,
        "requests": requests,
        "client": client,
        "window": window,
        "rate": rate,
    }


def stop_on_sigterm() -> None:
    """SIGTERM stops a bench as Ctrl-C does: through KeyboardInterrupt, so everything it started is stopped."""

    def _terminate(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)


def split_cpus(parser: argparse.ArgumentParser, one_cpu: bool) -> tuple[set[int] | None, set[int] | None]:
    """With --one-cpu: (the CPU for `mesh up` and all it starts, the CPUs for the mock and the load generator)."""
    if not one_cpu:
        return None, None
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        parser.error("--one-cpu needs a second CPU for the mock and the load generator")
    return {allowed[0]}, set(allowed[1:])


def start_mock_and_loadgen(
    procs: Processes, latency_ms: float, cpus: set[int] | None
) -> tuple[multiprocessing.Process, int, Connection]:
    """The mock upstream and the load generator, each a process of its own (on `cpus`, when given): (the mock, its
    port, the pipe to send the load generator its cells and get their results)."""
    ctx = multiprocessing.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    mock = ctx.Process(target=_mock_main, args=(child_end, latency_ms), name="mock-upstream", daemon=True)
    mock.start()
    procs.children.append(mock)
    if cpus is not None:
        os.sched_setaffinity(mock.pid, cpus)
    if not parent_end.poll(30):
        raise SystemExit("the mock upstream did not start")
    mock_port = parent_end.recv()
    loadgen_end, child_end = ctx.Pipe()
    loadgen = ctx.Process(target=_loadgen_main, args=(child_end,), name="load-generator", daemon=True)
    loadgen.start()
    procs.children.append(loadgen)
    if cpus is not None:
        os.sched_setaffinity(loadgen.pid, cpus)
    return mock, mock_port, loadgen_end


def _cpu_tree(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of a process and each of its descendants, by pid."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return {}
    seconds = {}
    for p in procs:
        try:
            t = p.cpu_times()
            seconds[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return seconds


def _settle(pid: int, quiet: float = 0.004, interval: float = 0.1, limit: float = 3.0) -> None:
    """Wait until a process tree has (nearly) stopped using CPU: deferred work is done."""
    deadline = time.monotonic() + limit
    before = sum(_cpu_tree(pid).values())
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = sum(_cpu_tree(pid).values())
        if now - before < quiet:
            return
        before = now


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float, name: str) -> float:
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{name} not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _start_mesh(
    procs: Processes, tmp: Path, mock_port: int, profile: Path | None, cpus: set[int] | None = None
) -> tuple[subprocess.Popen, int, str]:
    """`mesh up` on a free port with a temp data dir and config (on `cpus` only, when given, with its background
    processes there too); returns (process, port, API key)."""
    import httpx

    config = tmp / "mesh.toml"
    models = "".join(
        f"""
[[models]]
id = "bench/{upstream}"
provider = "bench"
upstream = "{upstream}"
prompt_usd_per_1k = "0.001"
completion_usd_per_1k = "0.002"
"""
        for upstream in ("model", "model-slow")
    )
    config.write_text(
        f'[providers.bench]\nkind = "openai-compatible"\nbase_url = "http://127.0.0.1:{mock_port}/v1"\n' + models
    )
    data = tmp / "mesh-data"
    port = _free_port()
    env = {
        **os.environ,
        "MESH_DATA_DIR": str(data),
        "MESH_HOST": "127.0.0.1",
        "MESH_PORT": str(port),
        "MESH_CONFIG": str(config),
    }
    for name in ("MESH_NATS_URL", "MESH_DATABASE_URL", "MESH_OPERATOR_TOKEN", "MESH_STREAM"):
        env.pop(name, None)  # the embedded servers, in the temp dir
    if cpus is not None:
        env["MESH_BACKGROUND_CPUS"] = "all"  # all of the CPUs it may use: NATS, PostgreSQL, the worker beside it
    if profile is not None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--mesh-under-cprofile", str(profile)]
    else:
        script = Path(sys.executable).parent / "mesh"
        cmd = [str(script), "up"] if script.exists() else [sys.executable, "-m", "api.cli", "up"]
    log = tmp / "mesh.log"
    process = procs.popen("mesh up", cmd, env, log, cpus)
    seconds = _wait_http(f"http://127.0.0.1:{port}/health", process, log, 180, "mesh up")
    procs.remember_descendants(process)
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, timeout=30) as http:
        signup = http.post("/api/signup", json={"email": "bench@example.com", "password": "bench password 123"})
        signup.raise_for_status()
        account, token = signup.json()["account_id"], signup.json()["management_token"]
        operator = (data / "operator_token").read_text().strip()
        http.post(
            f"/admin/accounts/{account}/credits",
            json={"amount_usd": "100000", "reason": "bench"},
            headers={"authorization": f"Bearer {operator}"},
        ).raise_for_status()
        created = http.post("/api/keys", json={"label": "bench"}, headers={"authorization": f"Bearer {token}"})
        created.raise_for_status()
        key = created.json()["key"]
    print(f"mesh up healthy in {seconds:.1f} s on :{port} (pid {process.pid}; log {log})", flush=True)
    return process, port, key


def _litellm_command() -> str | None:
    return shutil.which("litellm") or (
        str(Path(sys.executable).parent / "litellm") if (Path(sys.executable).parent / "litellm").exists() else None
    )


def _start_litellm(
    procs: Processes, tmp: Path, mock_port: int, command: str, cpus: set[int] | None = None
) -> tuple[subprocess.Popen, int, str]:
    config = tmp / "litellm.yaml"
    entries = "".join(
        f"""  - model_name: bench/{upstream}
    litellm_params:
      model: openai/{upstream}
      api_base: http://127.0.0.1:{mock_port}/v1
      api_key: sk-bench
"""
        for upstream in ("model", "model-slow")
    )
    config.write_text(
        "model_list:\n"
        + entries
        + """litellm_settings:
  callbacks: []
  success_callback: []
  failure_callback: []
  set_verbose: false
  telemetry: false
general_settings:
  disable_spend_logs: true
"""
    )
    port = _free_port()
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    for name in ("DATABASE_URL", "REDIS_HOST", "REDIS_URL"):
        env.pop(name, None)  # no DB, no cache
    # Recent LiteLLM refuses to start without a strong master key; clients authenticate with it, as with Mesh.
    master_key = "sk-" + secrets.token_hex(32)
    env["LITELLM_MASTER_KEY"] = master_key
    log = tmp / "litellm.log"
    process = procs.popen(
        "litellm",
        [command, "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env,
        log,
        cpus,
    )
    seconds = _wait_http(f"http://127.0.0.1:{port}/health/liveliness", process, log, 180, "litellm")
    procs.remember_descendants(process)
    print(f"litellm healthy in {seconds:.1f} s on :{port} (pid {process.pid}; log {log})", flush=True)
    return process, port, master_key


def _mesh_under_cprofile(out: str) -> int:
    """`mesh up` with cProfile on (its main thread: the event loop); the profile is written when it stops."""
    import cProfile

    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]  # `gateway` is Mesh's package here
    from api.cli import main

    profiler = cProfile.Profile()
    # the bench turns it on for the measured cells only (SIGUSR1) and off after them (SIGUSR2)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    try:
        return main(["up"])
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def _print_profile(path: Path, requests: int, top: int = 25) -> None:
    import pstats

    stats = pstats.Stats(str(path)).stats  # (file, line, function) -> (calls, ncalls, tottime, cumtime, callers)
    per = 1e6 / max(1, requests)

    def where(k) -> str:
        file, line, func = k
        if file == "~":
            return func
        try:
            file = str(Path(file).resolve().relative_to(REPO))
        except ValueError:
            file = "/".join(Path(file).parts[-2:])
        return f"{file}:{line} {func}"

    total = sum(v[2] for v in stats.values())
    print(
        f"\nMesh under cProfile during the measured cells ({requests} requests, warm-ups included; the event loop's "
        f"thread only): {total * per:.0f} µs/request in all, epoll waits included; cProfile inflates small "
        "functions"
    )
    print(f"  top {top} by own time (µs/request, calls/request):")
    for k, v in sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]:
        print(f"    {v[2] * per:8.1f}  {v[1] / max(1, requests):6.2f}  {where(k)}")
    own = [(k, v) for k, v in stats.items() if k[0].startswith(str(REPO)) and "/bench/" not in k[0]]
    print("  Mesh's own functions by cumulative time (µs/request, calls/request):")
    for k, v in sorted(own, key=lambda kv: -kv[1][3])[:top]:
        print(f"    {v[3] * per:8.1f}  {v[1] / max(1, requests):6.2f}  {where(k)}")


# --------------------------------------------------------------------------------------------- the run


def _body(model: str, stream: bool) -> bytes:
    import json

    document = {
        "model": model,
        "max_tokens": 64,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello in three words."},
        ],
    }
    if stream:
        document.update(stream=True, stream_options={"include_usage": True})
    return json.dumps(document, separators=(",", ":")).encode()


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) else float("nan")


def _fmt(value, spec: str, width: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    return format(value, spec).rjust(width)


COLUMNS = (
    ("upstream", 8),
    ("mode", 6),
    ("in-flight", 9),
    ("target", 7),
    ("req/s", 8),
    ("p50", 7),
    ("p99", 7),
    ("+p50", 7),
    ("+p99", 7),
    ("gw CPU", 8),
    ("helpers", 8),
    ("client", 8),
    ("mock", 6),
    ("errors", 6),
)
UNITS = ("", "", "", "", "", "ms", "ms", "ms", "ms", "µs/req", "µs/req", "µs/req", "µs/req", "")


def _header() -> str:
    names = " ".join(f"{name:>{w}}" for name, w in COLUMNS)
    units = " ".join(f"{unit:>{w}}" for unit, (_, w) in zip(UNITS, COLUMNS))
    return f"{names}\n{units}\n" + "-" * len(names)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--mesh-under-cprofile":
        return _mesh_under_cprofile(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=3.0,
        help="seconds measured per cell (default 3; 0: no time limit, then set --requests)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=0,
        help="at most this many requests measured per cell "
        "(default: no limit; whichever of --duration and --requests comes first)",
    )
    parser.add_argument(
        "--warmup", type=float, default=0.5, help="seconds run before each cell, not counted (default 0.5)"
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=20.0,
        help="the slow upstream's fixed latency (default 20; the fast one answers at once)",
    )
    parser.add_argument("--concurrency", default="1,16,64", help="requests in flight, a comma list (default 1,16,64)")
    parser.add_argument("--modes", default="non-stream,stream", help="non-stream, stream or both (default both)")
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator's HTTP client "
        "(default raw asyncio; httpx costs the client several times more CPU per request)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="run Mesh under cProfile, write the stats "
        "to FILE and print its hot spots (numbers of that run are inflated by the profiler)",
    )
    parser.add_argument("--no-litellm", action="store_true", help="skip LiteLLM even if installed")
    parser.add_argument(
        "--one-cpu",
        action="store_true",
        help="run mesh up (gateway, NATS, PostgreSQL, worker) "
        "on CPU 0 only, as `taskset -c 0 mesh up`, and the mock and load generator on the others",
    )
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.duration <= 0 and args.requests <= 0:
        parser.error("set --duration or --requests")
    if not set(modes) <= {"non-stream", "stream"}:
        parser.error("--modes: non-stream and/or stream")
    server_cpus, others = split_cpus(parser, args.one_cpu)

    import psutil

    stop_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="mesh-bench-"))
    procs = Processes()
    exit_code = 0
    completed = False
    results: dict[tuple, dict] = {}
    served: dict[str, int] = {}  # requests sent to each target, warm-ups included
    idle: dict[int, tuple[float, float]] = {}  # gateway pid -> CPU s/s of its own process and of its helpers, idle
    try:
        mock, mock_port, loadgen_end = start_mock_and_loadgen(procs, args.latency_ms, others)
        mock_ps = psutil.Process(mock.pid)

        mesh, mesh_port, key = _start_mesh(procs, tmp, mock_port, args.profile, server_cpus)
        targets = {
            "direct": ("127.0.0.1", mock_port, "sk-unused", None, ""),
            "mesh": ("127.0.0.1", mesh_port, key, mesh.pid, "bench/"),
        }
        litellm = None if args.no_litellm else _litellm_command()
        if litellm:
            process, port, master_key = _start_litellm(procs, tmp, mock_port, litellm, server_cpus)
            targets["litellm"] = ("127.0.0.1", port, master_key, process.pid, "bench/")
        litellm_note = (
            None
            if litellm
            else (
                "LiteLLM: skipped (--no-litellm)"
                if args.no_litellm
                else "LiteLLM: not installed, so no ratios against it; to include it: pip install 'litellm[proxy]' "
                "(then rerun; it is started with one worker against the same mock)"
            )
        )

        def run(
            target: str,
            upstream: str,
            stream: bool,
            concurrency: int,
            duration: float,
            warmup: float,
            requests: int = 0,
        ) -> dict:
            host, port, api_key, server_pid, prefix = targets[target]
            spec = cell_spec(
                host, port, api_key, prefix + upstream, stream, concurrency, duration, warmup, requests, args.client
            )
            server_before = _cpu_tree(server_pid) if server_pid else {}
            began = time.monotonic()
            mock_before = sum(mock_ps.cpu_times()[:2])
            profiling = args.profile is not None and target == "mesh" and duration > 0
            if profiling:
                os.kill(server_pid, signal.SIGUSR1)
            loadgen_end.send(spec)
            result = loadgen_end.recv()
            if "failed" in result:
                raise SystemExit(f"load generator failed on {target}: {result['failed']}")
            if server_pid:
                _settle(server_pid)
                after = _cpu_tree(server_pid)
                deltas = {pid: after[pid] - server_before.get(pid, 0.0) for pid in after}
                per = 1e6 / max(1, result["total"])
                own = deltas.pop(server_pid, 0.0)
                idle_own, idle_helpers = idle.get(server_pid, (0.0, 0.0))
                wall = time.monotonic() - began
                result["gw_cpu_us"] = max(0.0, own - idle_own * wall) * per
                result["helpers_cpu_us"] = max(0.0, sum(deltas.values()) - idle_helpers * wall) * per
                result["coarse"] = own < 0.2  # psutil counts in 10 ms ticks
                if profiling:
                    os.kill(server_pid, signal.SIGUSR2)
                    served["profiled"] = served.get("profiled", 0) + result["total"]
            result["mock_cpu_us"] = (sum(mock_ps.cpu_times()[:2]) - mock_before) * 1e6 / max(1, result["total"])
            served[target] = served.get(target, 0) + result["total"]
            return result

        # a first request through each gateway, both modes: it works, and caches, leases and pools are warm
        for target in targets:
            for stream in (False, True):
                check = run(target, "model", stream, 1, 0, 0, requests=20)
                if check["errors"] or not check["n"]:
                    raise SystemExit(f"{target} does not answer properly: {check['sample']}")

        # what each gateway burns when idle (timers, pings), subtracted from the per-request CPU
        for target, (_, _, _, pid, _) in targets.items():
            if pid:
                _settle(pid)
                before, began = _cpu_tree(pid), time.monotonic()
                time.sleep(2.0)
                after, wall = _cpu_tree(pid), time.monotonic() - began
                helpers = sum(after[p] - before.get(p, 0.0) for p in after if p != pid)
                idle[pid] = ((after.get(pid, 0.0) - before.get(pid, 0.0)) / wall, helpers / wall)
                print(
                    f"{target} idle: {idle[pid][0] * 100:.1f}% CPU, helpers {idle[pid][1] * 100:.1f}% "
                    "(subtracted below)",
                    flush=True,
                )

        latencies = [0.0, args.latency_ms] if args.latency_ms else [0.0]
        where = (
            f"mesh up on CPU {min(server_cpus)} only (gateway, NATS, PostgreSQL, worker); mock and load "
            f"generator on CPUs {','.join(map(str, sorted(others)))}; "
            if args.one_cpu
            else ""
        )
        print(
            f"\n{where}{os.cpu_count()} CPUs; client {args.client}; {args.duration:g} s per cell "
            f"after {args.warmup:g} s "
            f"warm-up{f', at most {args.requests} requests' if args.requests else ''}; "
            "latency of one whole request (stream: until [DONE]);\n+p50/+p99: over direct at the same in-flight count; "
            "CPU per request net of idle use (~: under 0.2 s measured, psutil counts 10 ms ticks)\n",
            flush=True,
        )
        print(_header(), flush=True)
        for latency in latencies:
            upstream = "model-slow" if latency else "model"
            for mode in modes:
                for concurrency in concurrencies:
                    for target in targets:
                        r = run(
                            target, upstream, mode == "stream", concurrency, args.duration, args.warmup, args.requests
                        )
                        results[latency, mode, concurrency, target] = r
                        direct = results.get((latency, mode, concurrency, "direct"))
                        added50 = r["p50"] - direct["p50"] if target != "direct" else None
                        added99 = r["p99"] - direct["p99"] if target != "direct" else None
                        gw_cpu = r.get("gw_cpu_us")
                        if gw_cpu is not None and r["coarse"]:
                            gw_cpu = f"~{gw_cpu:.0f}"
                        cells = (
                            f"{latency:g} ms",
                            mode.replace("non-stream", "plain"),
                            concurrency,
                            target,
                            r["rps"],
                            r["p50"],
                            r["p99"],
                            added50,
                            added99,
                            gw_cpu,
                            r.get("helpers_cpu_us"),
                            r["client_cpu_us"],
                            r["mock_cpu_us"],
                            r["errors"],
                        )
                        specs = ("", "", "d", "", ".0f", ".2f", ".2f", "+.2f", "+.2f", ".0f", ".0f", ".0f", ".0f", "d")
                        print(
                            " ".join(
                                _fmt(v, s, w) if not isinstance(v, str) else f"{v:>{w}}"
                                for v, s, (_, w) in zip(cells, specs, COLUMNS)
                            ),
                            flush=True,
                        )
                        if r["errors"]:
                            print(f"    first error: {r['sample']}", flush=True)

        # the summary: added latency at 1 in flight, throughput ratios, CPU per request
        print("\nSummary (plain = non-stream)")
        for latency in latencies:
            for mode in modes:
                name = f"upstream {latency:g} ms, {mode.replace('non-stream', 'plain')}"
                for target in [t for t in targets if t != "direct"]:
                    lines = []
                    one = results.get((latency, mode, 1, target))
                    d1 = results.get((latency, mode, 1, "direct"))
                    if one and d1:
                        lines.append(
                            f"+{one['p50'] - d1['p50']:.2f} ms p50 / +{one['p99'] - d1['p99']:.2f} ms p99 "
                            "at 1 in flight"
                        )
                    rps = {c: results[latency, mode, c, target]["rps"] for c in concurrencies}
                    direct_rps = {c: results[latency, mode, c, "direct"]["rps"] for c in concurrencies}
                    ratios = [f"{c}: {rps[c]:.0f} ({rps[c] / direct_rps[c]:.2f}x direct)" for c in concurrencies]
                    lines.append("req/s " + ", ".join(ratios))
                    cpu = [results[latency, mode, c, target].get("gw_cpu_us") for c in concurrencies]
                    lines.append("gw CPU " + "/".join(f"{c:.0f}" for c in cpu) + " µs/req")
                    print(f"  {name:<26} {target:<7} " + "; ".join(lines))
        if "litellm" in targets:
            print("\nLiteLLM / Mesh ratios (>1: LiteLLM costs more)")
            for latency in latencies:
                for mode in modes:
                    m1, l1, d1 = (results[latency, mode, 1, t] for t in ("mesh", "litellm", "direct"))
                    added = _ratio(l1["p50"] - d1["p50"], m1["p50"] - d1["p50"])
                    rps = [
                        _ratio(results[latency, mode, c, "mesh"]["rps"], results[latency, mode, c, "litellm"]["rps"])
                        for c in concurrencies
                    ]
                    cpu = [
                        _ratio(
                            results[latency, mode, c, "litellm"]["gw_cpu_us"],
                            results[latency, mode, c, "mesh"]["gw_cpu_us"],
                        )
                        for c in concurrencies
                    ]
                    print(
                        f"  upstream {latency:g} ms, {mode:<10}: added p50 at 1 in flight x{added:.2f}; "
                        f"Mesh req/s over LiteLLM's "
                        + ", ".join(f"{c}: x{x:.2f}" for c, x in zip(concurrencies, rps))
                        + "; CPU/req "
                        + ", ".join(f"{c}: x{x:.2f}" for c, x in zip(concurrencies, cpu))
                    )
        else:
            print("\n" + litellm_note)
        completed = True
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        exit_code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if procs.children and len(procs.children) > 1 and procs.children[1].is_alive():
                loadgen_end.send(None)
        except Exception:
            pass
        if not completed and exit_code == 0:  # a failure: show what the servers said before their logs go
            for log in sorted(tmp.glob("*.log")):
                print(f"--- last lines of {log.name}:\n{log.read_text(errors='replace')[-4000:]}", file=sys.stderr)
        procs.stop()
        if args.profile is not None and args.profile.exists() and completed:
            _print_profile(args.profile, served.get("profiled", 0))
        shutil.rmtree(tmp, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
