"""What a gateway process counts for `GET /metrics`: each answered request adds to a few dicts (no lock, no
client library on the hot path); api/metrics.py renders them in the Prometheus text format when scraped.

Labels are bounded: models and providers come from the catalog, refusal codes and upstream error kinds from
Mesh's own error codes, statuses from the HTTP statuses the gateway answers with."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from domain.usage import UsageRecorded

# Upper bounds of the duration buckets, in seconds (Prometheus' `le`): LLM calls run from milliseconds to minutes.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_BUCKETS_US = tuple(round(b * 1_000_000) for b in DURATION_BUCKETS)
TOKEN_KINDS = ("prompt", "completion", "cached", "cache_write", "reasoning")


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf), the sum in microseconds and the count."""

    __slots__ = ("counts", "sum_us")

    def __init__(self) -> None:
        self.counts = [0] * (len(_BUCKETS_US) + 1)
        self.sum_us = 0

    def observe(self, us: int) -> None:
        self.counts[bisect_left(_BUCKETS_US, us)] += 1
        self.sum_us += us

    @property
    def count(self) -> int:
        return sum(self.counts)


class GatewayMetrics:
    def __init__(self) -> None:
        self.requests: defaultdict[tuple[str, str, int], int] = defaultdict(int)  # (model, provider, HTTP status)
        self.duration: defaultdict[str, Histogram] = defaultdict(Histogram)  # by model: from arrival to the end
        self.upstream: defaultdict[str, Histogram] = defaultdict(Histogram)  # by model: the upstream's own time
        self.first_token: defaultdict[str, Histogram] = defaultdict(Histogram)  # by model: streams, from arrival
        self.tokens: defaultdict[tuple[str, str], int] = defaultdict(int)  # (model, kind)
        self.spend: defaultdict[str, int] = defaultdict(int)  # by model, pico-USD
        self.refused: defaultdict[str, int] = defaultdict(int)  # by error code: answered before any model
        self.upstream_errors: defaultdict[tuple[str, str], int] = defaultdict(int)  # (provider, error code)

    def served(self, event: UsageRecorded) -> None:
        """A request that reached a model, as its usage event tells it."""
        model = event.model
        self.requests[(model, event.provider, event.http_status)] += 1
        self.duration[model].observe(event.latency_us)
        if event.upstream_us:
            self.upstream[model].observe(event.upstream_us)
        if event.first_token_us is not None:
            self.first_token[model].observe(event.first_token_us)
        tokens = self.tokens
        tokens[(model, "prompt")] += event.prompt_tokens
        tokens[(model, "completion")] += event.completion_tokens
        if event.cached_prompt_tokens:
            tokens[(model, "cached")] += event.cached_prompt_tokens
        if event.cache_write_tokens:
            tokens[(model, "cache_write")] += event.cache_write_tokens
        if event.reasoning_tokens:
            tokens[(model, "reasoning")] += event.reasoning_tokens
        self.spend[model] += event.cost

    def refusal(self, code: str) -> None:
        """A request answered before it reached a model (a bad key or body, a limit, the budget)."""
        self.refused[code] += 1

    def upstream_error(self, provider: str, code: str) -> None:
        self.upstream_errors[(provider, code)] += 1
