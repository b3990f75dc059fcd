"""The gateway's counters for GET /metrics, and how they are rendered: buckets, cumulative counts, who reads, and
the health check a scrape reuses."""

import uuid
from datetime import datetime, timezone

from prometheus_client.parser import text_string_to_metric_families

from api.services.health import HealthService
from api.services.metrics import LAG_REUSE_SECONDS, MetricsService, _histogram
from api.supervisor import Supervisor
from domain.usage import UsageRecorded
from gateway.lease_admission import Budgets
from gateway.metrics import DURATION_BUCKETS, GatewayMetrics


def event(latency_us: int, **fields) -> UsageRecorded:
    values = dict(
        trace_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        model="acme/m",
        requested_model=None,
        provider="acme",
        prompt_tokens=10,
        completion_tokens=5,
        prompt_per_1k=0,
        completion_per_1k=0,
        cost=123,
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=latency_us,
        stream=False,
        estimated=False,
        request_id=None,
        error=None,
        lease_id=None,
    )
    return UsageRecorded(**{**values, **fields})


def test_a_served_request_counts_once_in_every_series_it_belongs_to():
    metrics = GatewayMetrics()
    metrics.served(event(7_000, upstream_us=5_000, first_token_us=2_000, reasoning_tokens=3))
    metrics.served(event(10_000, http_status=502))  # exactly on a bound: in that bucket (le is "<=")
    metrics.served(event(400_000_000))  # past the last bound: +Inf
    assert metrics.requests == {("acme/m", "acme", 200): 2, ("acme/m", "acme", 502): 1}
    counts = metrics.duration["acme/m"].counts
    assert counts[DURATION_BUCKETS.index(0.01)] == 2 and counts[-1] == 1 and sum(counts) == 3
    assert metrics.upstream["acme/m"].count == 1 and metrics.first_token["acme/m"].count == 1
    assert metrics.tokens[("acme/m", "prompt")] == 30 and metrics.tokens[("acme/m", "reasoning")] == 3
    assert ("acme/m", "cached") not in metrics.tokens  # only kinds that were seen
    assert metrics.spend["acme/m"] == 369


def test_histograms_render_cumulative_buckets_prometheus_can_parse():
    metrics = GatewayMetrics()
    for us in (7_000, 10_000, 400_000_000):
        metrics.served(event(us))
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()

    class One:
        def collect(self):
            return [_histogram("mesh_request_duration_seconds", "d", metrics.duration)]

    registry.register(One())
    samples = {
        (s.name, s.labels.get("le")): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    assert samples[("mesh_request_duration_seconds_bucket", "0.005")] == 0
    assert samples[("mesh_request_duration_seconds_bucket", "0.01")] == 2
    assert samples[("mesh_request_duration_seconds_bucket", "300.0")] == 2
    assert samples[("mesh_request_duration_seconds_bucket", "+Inf")] == 3
    assert samples[("mesh_request_duration_seconds_count", None)] == 3
    assert samples[("mesh_request_duration_seconds_sum", None)] == (7_000 + 10_000 + 400_000_000) / 1e6


def test_only_the_operator_token_and_the_metrics_token_read_metrics():
    service = MetricsService(GatewayMetrics(), None, None, None, ("mo-operator", "scraper"))  # type: ignore[arg-type]
    assert service.may_read("mo-operator") and service.may_read("scraper")
    assert not service.may_read("") and not service.may_read("mo-operato") and not service.may_read("scraper ")
    unset = MetricsService(GatewayMetrics(), None, None, None, ("mo-operator", ""))  # type: ignore[arg-type]
    assert not unset.may_read("")  # no MESH_METRICS_TOKEN: an empty token reads nothing


class CountingSource:
    """The event stream's state, counting how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def state(self) -> tuple[int, int, int]:
        self.calls += 1
        return 10, 100, 1000


class NoPostgres:
    def connection(self, timeout: float):
        raise OSError("no PostgreSQL here")


class Spool:
    queued = 0

    def spool_depth(self) -> int:
        return 0


async def test_scrapes_close_together_reuse_one_health_check():
    source = CountingSource()
    health = HealthService(source, NoPostgres(), Supervisor())  # type: ignore[arg-type]
    service = MetricsService(GatewayMetrics(), Budgets(None), Spool(), health, ("mo-operator",))  # type: ignore[arg-type]
    first, second = await service.render(), await service.render()
    assert source.calls == 1 and b"mesh_budget_leases_open 0.0" in first and b"mesh_usage_spool_events" in second
    await health.check()  # GET /health checks anew each time; a scrape after it reuses what it found
    await service.render()
    assert source.calls == 2
    made, report = health._last  # type: ignore[misc]
    health._last = (made - LAG_REUSE_SECONDS - 0.1, report)  # older than a scrape may show
    await service.render()
    assert source.calls == 3
