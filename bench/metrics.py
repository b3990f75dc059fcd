"""What counting a request for GET /metrics costs the gateway: Mesh's counters (gateway/metrics.py: dict
increments, histograms bucketed with bisect) beside the same counts kept with prometheus_client's Counter and
Histogram objects (the reference: labels looked up per request). Goal: <= 2 µs per request.

    python -m bench.metrics [requests]
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import datetime, timezone

from prometheus_client import CollectorRegistry, Counter, Histogram

from domain.usage import UsageRecorded
from gateway.metrics import DURATION_BUCKETS, GatewayMetrics

GOAL_US = 2.0
MODELS = [("acme/gpt-test", "acme"), ("anthropic/claude", "anthropic"), ("gemini/flash", "gemini")]


def events(n: int) -> list[UsageRecorded]:
    now = datetime.now(timezone.utc)
    out = []
    for i in range(n):
        model, provider = MODELS[i % len(MODELS)]
        out.append(
            UsageRecorded(
                trace_id=uuid.uuid4(),
                account_id=uuid.uuid4(),
                key_id=uuid.uuid4(),
                model=model,
                requested_model=model,
                provider=provider,
                prompt_tokens=100 + i % 50,
                completion_tokens=20 + i % 30,
                prompt_per_1k=500_000_000,
                completion_per_1k=1_500_000_000,
                cost=80_000_000 + i,
                status="ok",
                http_status=200 if i % 20 else 502,
                timestamp=now,
                latency_us=1_000 + (i * 7919) % 900_000,
                upstream_us=800 + (i * 7919) % 800_000,
                first_token_us=500 if i % 2 else None,
                stream=bool(i % 2),
                estimated=False,
                request_id=None,
                error=None,
                lease_id=None,
                cached_prompt_tokens=i % 3,
                reasoning_tokens=i % 5,
            )
        )
    return out


def with_prometheus_client(batch: list[UsageRecorded]) -> float:
    registry = CollectorRegistry()
    requests = Counter("r", "", ["model", "provider", "status"], registry=registry)
    duration = Histogram("d", "", ["model"], buckets=DURATION_BUCKETS, registry=registry)
    upstream = Histogram("u", "", ["model"], buckets=DURATION_BUCKETS, registry=registry)
    first = Histogram("f", "", ["model"], buckets=DURATION_BUCKETS, registry=registry)
    tokens = Counter("t", "", ["model", "kind"], registry=registry)
    spend = Counter("s", "", ["model"], registry=registry)
    started = time.perf_counter()
    for e in batch:
        requests.labels(e.model, e.provider, str(e.http_status)).inc()
        duration.labels(e.model).observe(e.latency_us / 1e6)
        if e.upstream_us:
            upstream.labels(e.model).observe(e.upstream_us / 1e6)
        if e.first_token_us is not None:
            first.labels(e.model).observe(e.first_token_us / 1e6)
        tokens.labels(e.model, "prompt").inc(e.prompt_tokens)
        tokens.labels(e.model, "completion").inc(e.completion_tokens)
        if e.cached_prompt_tokens:
            tokens.labels(e.model, "cached").inc(e.cached_prompt_tokens)
        if e.reasoning_tokens:
            tokens.labels(e.model, "reasoning").inc(e.reasoning_tokens)
        spend.labels(e.model).inc(e.cost / 1e12)
    return time.perf_counter() - started


def with_mesh(batch: list[UsageRecorded]) -> float:
    metrics = GatewayMetrics()
    served = metrics.served
    started = time.perf_counter()
    for e in batch:
        served(e)
    return time.perf_counter() - started


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    batch = events(n)
    rounds = 5
    mesh = min(with_mesh(batch) for _ in range(rounds)) / n * 1e6
    reference = min(with_prometheus_client(batch) for _ in range(rounds)) / n * 1e6
    print(f"{n:,} requests, best of {rounds} rounds, µs per request")
    print("| counting | µs/request | goal |\n|---|---|---|")
    print(f"| prometheus_client Counter/Histogram (reference) | {reference:.2f} | |")
    print(f"| Mesh (gateway/metrics.py) | {mesh:.2f} | <= {GOAL_US} |")
    print(f"ratio reference / Mesh: {reference / mesh:.1f}x; goal {'met' if mesh <= GOAL_US else 'NOT met'}")


if __name__ == "__main__":
    main()
