"""`GET /metrics`: what this process counted (gateway/metrics.py), its budget leases and usage spool, how far
behind each read model is, and the process's own metrics, in the Prometheus text format. Each gateway process
serves its own numbers: a scrape config lists every process (docs/operations.md)."""

from __future__ import annotations

import asyncio
import hmac
from decimal import Decimal

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.services.health import HealthService
from domain.money import PICO_PER_USD
from gateway.lease_admission import Budgets
from gateway.metrics import DURATION_BUCKETS, GatewayMetrics, Histogram
from gateway.usage import UsagePublisher

# The classic text format every Prometheus reads (what generate_latest writes); the charset is added on the way out
CONTENT_TYPE = "text/plain; version=0.0.4"
# how old the health report whose projection lags a scrape shows may be: scrapes this close reuse it, with no I/O
LAG_REUSE_SECONDS = 5.0


class _Snapshot:
    """A collector that yields the families of the scrape being rendered."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> list[Metric]:
        return self.families


class MetricsService:
    def __init__(
        self,
        gateway: GatewayMetrics,
        budgets: Budgets,
        usage: UsagePublisher,
        health: HealthService,
        readers: tuple[str, ...],  # the tokens that may read them: the operator token, MESH_METRICS_TOKEN
    ):
        self.gateway, self.budgets, self.usage, self.health = gateway, budgets, usage, health
        self._readers = tuple(token.encode() for token in readers if token)
        self._snapshot = _Snapshot()
        self._registry = CollectorRegistry(auto_describe=False)
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=self._registry)
        self._registry.register(self._snapshot)  # type: ignore[arg-type]

    def may_read(self, token: str) -> bool:
        presented = token.encode()
        return any([hmac.compare_digest(presented, reader) for reader in self._readers])  # every one compared

    async def render(self) -> bytes:
        report = await self.health.recent(LAG_REUSE_SECONDS)
        spooled = await asyncio.to_thread(self.usage.spool_depth)
        self._snapshot.families = [*self._requests(), *self._budget(spooled)]
        lag = GaugeMetricFamily(
            "mesh_projection_lag_events", "Events on the stream a read model has not applied yet", labels=["read_model"]
        )
        for projection in report.projections:
            lag.add_metric([projection.name], projection.lag)
        self._snapshot.families.append(lag)
        return generate_latest(self._registry)  # no await since the families were set: one scrape at a time

    def _requests(self) -> list[Metric]:
        g = self.gateway
        requests = CounterMetricFamily(
            "mesh_requests",
            "Requests that reached a model, by the HTTP status answered",
            labels=["model", "provider", "status"],
        )
        for (model, provider, status), n in sorted(g.requests.items()):
            requests.add_metric([model, provider, str(status)], n)
        refused = CounterMetricFamily(
            "mesh_refused_requests", "Requests answered before reaching a model, by error code", labels=["code"]
        )
        for code, n in sorted(g.refused.items()):
            refused.add_metric([code], n)
        tokens = CounterMetricFamily("mesh_tokens", "Tokens metered, by kind", labels=["model", "kind"])
        for (model, kind), n in sorted(g.tokens.items()):
            tokens.add_metric([model, kind], n)
        spend = CounterMetricFamily("mesh_spend_usd", "What the requests cost their accounts", labels=["model"])
        for model, pico in sorted(g.spend.items()):
            spend.add_metric([model], float(Decimal(pico) / PICO_PER_USD))
        errors = CounterMetricFamily(
            "mesh_upstream_errors", "Upstream failures, by provider and kind (error code)", labels=["provider", "kind"]
        )
        for (provider, kind), n in sorted(g.upstream_errors.items()):
            errors.add_metric([provider, kind], n)
        return [
            requests,
            refused,
            _histogram("mesh_request_duration_seconds", "From the request's arrival to its last byte", g.duration),
            _histogram("mesh_upstream_duration_seconds", "The upstream's own time", g.upstream),
            _histogram("mesh_time_to_first_token_seconds", "Streams: from the request's arrival", g.first_token),
            tokens,
            spend,
            errors,
        ]

    def _budget(self, spooled: int) -> list[Metric]:
        b = self.budgets
        return [
            GaugeMetricFamily("mesh_budget_leases_open", "Budget leases this process holds", value=b.open_leases),
            CounterMetricFamily("mesh_budget_leases_taken", "Leases the limits granted", value=b.leases_taken),
            CounterMetricFamily("mesh_budget_leases_refused", "Leases the limits refused", value=b.leases_refused),
            GaugeMetricFamily(
                "mesh_usage_spool_events", "Usage events kept on disk until JetStream takes them", value=spooled
            ),
            GaugeMetricFamily("mesh_usage_queued_events", "Usage events waiting to be sent", value=self.usage.queued),
        ]


def _histogram(name: str, documentation: str, by_model: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["model"])
    for model, histogram in sorted(by_model.items()):
        cumulative, buckets = 0, []
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), histogram.counts):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        family.add_metric([model], buckets, histogram.sum_us / 1_000_000)
    return family
