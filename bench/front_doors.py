"""What each front door adds per request: /v1/responses and /v1/messages beside /v1/chat/completions (the
reference), through the same gateway to the same upstream. Two parts:

1. Whole stack (`--seconds` > 0): `mesh up` in front of bench/gateway.py's mock OpenAI-compatible upstream, one
   request in flight from its load generator, plain and streamed, for each door and for the mock called directly,
   in `--rounds` interleaved rounds (each cell's best p50 kept, against the machine's noise): p50 / p99 of a whole
   request, what Mesh adds over the direct call at p50 ("+p50"), and that added latency's ratio to chat
   completions' in the same mode.
2. In process: the real Gateway ASGI app (budgets in memory, as in bench/admission.py; a usage sink that drops
   events) with an OpenAI-kind provider answering at once with what an OpenAI upstream sends: a chat.completion
   with usage, or a stream of a role chunk, 8 content chunks, a finish chunk, a usage chunk and [DONE]. Chat
   completions relays them as they are; the other two doors translate the request and re-encode the answer
   (gateway/wire/). Each cell is the gateway's own CPU time per request, the best of interleaved rounds; the ratio
   is to chat completions in the same mode.

    python -m bench.front_doors [--seconds 3] [--rounds 3] [--requests 5000]
    python -m bench.front_doors --chat-only [--rounds 10] [--requests 2000]   # chat completions' own time only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

import msgspec

from bench.admission import DropUsage, FundedKey, InstantAdapter, MemoryBroker, chat_scope, one_model_catalog
from gateway.app import Gateway
from gateway.keys import KeyCache
from gateway.lease_admission import Budgets
from gateway.providers.base import SSE_DONE, StreamReply, Usage, sse

ROUNDS = 3
WORDS = 8  # content chunks of a streamed answer
CHUNK = {"id": "chatcmpl-x", "object": "chat.completion.chunk", "created": 1, "model": "m"}


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    return sse(msgspec.json.encode({**CHUNK, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))


FRAMES = [
    _chunk({"role": "assistant", "content": ""}),
    *[_chunk({"content": f" w{i}"}) for i in range(WORDS)],
    _chunk({}, "stop"),
    sse(msgspec.json.encode({**CHUNK, "choices": [], "usage": Usage(10, WORDS).openai()})),
    SSE_DONE,
]


class InstantStreamingAdapter(InstantAdapter):
    async def chat_stream(self, model, body, include_usage):
        reply: StreamReply

        async def frames():
            for frame in FRAMES:
                yield frame
            reply.usage = Usage(10, WORDS)

        reply = StreamReply(frames(), time.perf_counter_ns())
        reply.usage = Usage(10, WORDS)
        return reply


def _bodies() -> dict[str, tuple[str, dict]]:
    chat = {"model": "p/m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi there"}]}
    return {
        "chat.completions": ("/v1/chat/completions", chat),
        "responses": ("/v1/responses", {"model": "p/m", "max_output_tokens": 50, "input": "hi there"}),
        "messages": ("/v1/messages", chat),
    }


async def run(requests: int, doors: tuple[str, ...] = (), rounds: int = ROUNDS) -> None:
    """The in-process part, for `doors` (all of them when empty), the best of `rounds` interleaved rounds."""
    funded = FundedKey()
    account, secret, key, load = funded.account, funded.secret, funded.key, funded.load
    catalog = one_model_catalog()
    gateway = Gateway(
        catalog, {"p": InstantStreamingAdapter()}, KeyCache(load), Budgets(MemoryBroker(key, account)), DropUsage()
    )
    statuses: list[int] = []

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def measure(path: str, body: dict, stream: bool) -> float:
        raw = msgspec.json.encode({**body, "stream": stream})
        scope = chat_scope(secret.plain, path)
        delivered = False

        async def receive():
            nonlocal delivered
            if delivered:  # the stream's disconnect watcher: the client stays
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": raw, "more_body": False}

        started = time.thread_time()  # CPU time: what the gateway's work costs, not what other processes take
        for _ in range(requests):
            delivered = False
            await gateway(scope, receive, send)
        return (time.thread_time() - started) / requests * 1e6

    cells: dict[tuple[str, bool], float] = {}
    measured = {door: spec for door, spec in _bodies().items() if not doors or door in doors}
    for _ in range(rounds):  # interleaved, so a slow moment of the machine hits every door alike
        for stream in (False, True):
            for door, (path, body) in measured.items():
                took = await measure(path, body, stream)
                cells[door, stream] = min(took, cells.get((door, stream), took))
    assert set(statuses) == {200}, f"a request was refused: {set(statuses)}"
    print(f"in process: the gateway's own CPU time\n{'front door':<20}{'mode':<12}{'µs/request':>12}{'ratio':>8}")
    for stream in (False, True):
        reference = cells["chat.completions", stream]
        for door in measured:
            took = cells[door, stream]
            mode = "stream" if stream else "plain"
            print(f"{door:<20}{mode:<12}{took:>12.1f}{took / reference:>8.2f}")


def _door_spec(spec: dict, door: str, stream: bool) -> dict:
    """bench/gateway.py's cell, sent to `door` with its body and what its complete answer holds."""
    model = json.loads(spec["body"])["model"]
    path, body = _bodies()[door]
    document = {**body, "model": model, "stream": stream}
    if stream and door == "chat.completions":
        document["stream_options"] = {"include_usage": True}
    marker = {"chat.completions": b"[DONE]", "responses": b"response.completed", "messages": b"message_stop"}
    return {**spec, "path": path, "body": json.dumps(document).encode(), "marker": marker[door] if stream else None}


def whole_stack(seconds: float, rounds: int) -> None:
    from bench.gateway import Processes, _start_mesh, cell_spec, start_mock_and_loadgen, stop_on_sigterm

    stop_on_sigterm()
    procs = Processes()
    tmp = Path(tempfile.mkdtemp(prefix="mesh-bench-doors-"))
    try:
        _, mock_port, loadgen = start_mock_and_loadgen(procs, 0, None)
        _, mesh_port, key = _start_mesh(procs, tmp, mock_port, None)

        def cell(port: int, api_key: str, model: str, door: str, stream: bool) -> dict:
            spec = _door_spec(cell_spec("127.0.0.1", port, api_key, model, stream, 1, seconds, 1.0), door, stream)
            loadgen.send(spec)
            result = loadgen.recv()
            if "failed" in result or result["errors"]:
                raise SystemExit(f"{door}: {result.get('failed') or result['sample']}")
            return result

        targets = [("(mock, direct)", mock_port, "sk-unused", "model")] + [
            (door, mesh_port, key, "bench/model") for door in _bodies()
        ]
        best: dict[tuple[str, bool], dict] = {}
        for _ in range(rounds):  # interleaved: a slow moment of the machine hits every door alike
            for stream in (False, True):
                for name, port, api_key, model in targets:
                    door = "chat.completions" if name.startswith("(") else name
                    result = cell(port, api_key, model, door, stream)
                    if (name, stream) not in best or result["p50"] < best[name, stream]["p50"]:
                        best[name, stream] = result
        print(f"whole stack, best p50 of {rounds} rounds")
        print(f"{'front door':<20}{'mode':<8}{'p50 ms':>9}{'p99 ms':>9}{'+p50 ms':>9}{'ratio':>7}")
        for stream in (False, True):
            mode = "stream" if stream else "plain"
            direct = best["(mock, direct)", stream]
            print(f"{'(mock, direct)':<20}{mode:<8}{direct['p50']:>9.3f}{direct['p99']:>9.3f}")
            reference = best["chat.completions", stream]["p50"] - direct["p50"]
            for door in _bodies():
                result = best[door, stream]
                added = result["p50"] - direct["p50"]
                times = f"{result['p50']:>9.3f}{result['p99']:>9.3f}{added:>9.3f}"
                print(f"{door:<20}{mode:<8}{times}{added / reference:>7.2f}")
    finally:
        procs.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per whole-stack cell; 0 skips that part")
    parser.add_argument("--rounds", type=int, default=3, help="whole-stack rounds; each cell's best p50 is kept")
    parser.add_argument("--requests", type=int, default=5000, help="per in-process cell")
    parser.add_argument(
        "--chat-only",
        action="store_true",
        help="only chat completions' own time in process (plain and streamed), the best of --rounds rounds",
    )
    args = parser.parse_args()
    if args.chat_only:
        asyncio.run(run(args.requests, ("chat.completions",), args.rounds))
        return
    if args.seconds > 0:
        whole_stack(args.seconds, args.rounds)
        print()
    asyncio.run(run(args.requests))


if __name__ == "__main__":
    main()
