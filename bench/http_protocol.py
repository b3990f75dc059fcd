"""The server's CPU per answer with uvicorn's httptools protocol beside Mesh's gathering one (api/http_protocol.py).

A trivial ASGI app (a 190-byte JSON answer with a content-length) is served by uvicorn on one CPU, alternately on
each protocol, while a load generator on the other CPUs keeps 64 requests in flight over kept-alive connections.
What the server process spends per answer (user + system CPU) is what the protocol adds or saves.

    python -m bench.http_protocol [--seconds 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

import psutil

from api.embedded import free_port
from api.http_protocol import GatheringHttpToolsProtocol

IN_FLIGHT = 64
BODY = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":'
    b'"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}'
)
PROTOCOLS = {"httptools": "httptools", "gathering": GatheringHttpToolsProtocol}  # uvicorn's `http` for each


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": BODY})


def _serve(port: int, protocol: str) -> None:
    import uvicorn

    http = PROTOCOLS[protocol]
    uvicorn.run(app, host="127.0.0.1", port=port, http=http, log_level="warning", access_log=False, lifespan="off")


async def _load(port: int, seconds: float) -> int:
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-length: 2\r\n\r\n{}"
    answered = 0
    stop = time.monotonic() + seconds

    async def client() -> None:
        nonlocal answered
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            answered += 1
        writer.close()

    await asyncio.gather(*(client() for _ in range(IN_FLIGHT)))
    return answered


def _measure(protocol: str, seconds: float, server_cpus: set[int]) -> float:
    """Server CPU µs per answer over `seconds` of load (after a second of warm-up)."""
    port = free_port("127.0.0.1")
    server = subprocess.Popen([sys.executable, "-m", "bench.http_protocol", "--serve", str(port), protocol])
    try:
        os.sched_setaffinity(server.pid, server_cpus)
        deadline = time.monotonic() + 10
        while True:
            try:
                asyncio.run(_load(port, 1.0))  # warm-up; fails until the server listens
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"the {protocol} server did not start") from None
                time.sleep(0.1)
        process = psutil.Process(server.pid)
        before = sum(process.cpu_times()[:2])
        answered = asyncio.run(_load(port, seconds))
        spent = sum(process.cpu_times()[:2]) - before
    finally:
        server.terminate()
        server.wait(10)
    return spent / answered * 1e6


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        _serve(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="load per measurement (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each protocol, alternating (default 3)")
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        parser.error("needs two CPUs: one for the server, the others for the load generator")
    server_cpus, load_cpus = {cpus[0]}, set(cpus[1:])
    os.sched_setaffinity(0, load_cpus)
    print(f"uvicorn on CPU {cpus[0]}, {IN_FLIGHT} requests in flight from CPUs {sorted(load_cpus)}")
    print("server CPU (user + system) per answer:")
    results: dict[str, list[float]] = {name: [] for name in PROTOCOLS}
    for round_ in range(1, args.rounds + 1):
        for name in PROTOCOLS:
            results[name].append(_measure(name, args.seconds, server_cpus))
            print(f"  round {round_}: {name:<10} {results[name][-1]:6.2f} µs", flush=True)
    plain, gathering = (statistics.median(results[name]) for name in PROTOCOLS)
    print(f"median: httptools {plain:.2f} µs, gathering {gathering:.2f} µs, ratio {gathering / plain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
