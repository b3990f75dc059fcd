"""GET /metrics against `mesh up`: parsed with prometheus_client's own parser, its counters equal the requests
made (by model and status, refusals by code, upstream errors by kind), tokens and spend equal what was billed,
and it needs the operator token."""

from __future__ import annotations

from decimal import Decimal

import openai
import pytest

from gateway.fallbacks import ATTEMPTS_PER_MODEL
from prometheus_client.parser import text_string_to_metric_families

from tests import http_calls
from tests.e2e.conftest import funded_key

MODEL = "acme/gpt-test"
PROMPT_PER_1K, COMPLETION_PER_1K = Decimal("0.5"), Decimal("1.5")
HI = [{"role": "user", "content": "hi"}]


def scrape(mesh) -> dict[tuple[str, frozenset], float]:
    answer = http_calls.get(
        mesh.url + "/metrics", headers={"authorization": f"Bearer {mesh.operator_token}"}, timeout=15
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"  # what every Prometheus reads
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0) - before.get(key, 0)


def test_the_counters_equal_the_requests_made_and_what_they_were_billed(mesh, fake_openai):
    funded = funded_key(mesh, "5")
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    before = scrape(mesh)
    usages = [sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=20).usage for _ in range(5)]
    for _ in range(2):
        chunks = list(
            sdk.chat.completions.create(
                model=MODEL, messages=HI, max_tokens=20, stream=True, stream_options={"include_usage": True}
            )
        )
        usages.append(chunks[-1].usage)
    fake_openai.fail_with = (500, "the upstream broke")
    calls = len(fake_openai.requests)
    try:
        with pytest.raises(openai.APIStatusError) as failed:
            sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=20)
    finally:
        fake_openai.fail_with = None
    failed_calls = len(fake_openai.requests) - calls  # a 500 is tried again (gateway/fallbacks.py)
    assert failed_calls == ATTEMPTS_PER_MODEL
    upstream_code = failed.value.body["code"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=mesh.url + "/v1", api_key="mk-not-a-key", max_retries=0).chat.completions.create(
            model=MODEL, messages=HI
        )
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="acme/no-such-model", messages=HI)
    after = scrape(mesh)

    assert delta(after, before, "mesh_requests_total", model=MODEL, provider="acme", status="200") == 7
    assert (
        delta(after, before, "mesh_requests_total", model=MODEL, provider="acme", status=str(failed.value.status_code))
        == 1
    )
    assert delta(after, before, "mesh_refused_requests_total", code="invalid_api_key") == 1
    assert delta(after, before, "mesh_refused_requests_total", code="model_not_found") == 1
    # every failed upstream call counts; the request they served counts once, as one request with its status
    assert delta(after, before, "mesh_upstream_errors_total", provider="acme", kind=upstream_code) == failed_calls
    prompt, completion = sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages)
    assert delta(after, before, "mesh_tokens_total", model=MODEL, kind="prompt") == prompt
    assert delta(after, before, "mesh_tokens_total", model=MODEL, kind="completion") == completion
    spent = (prompt * PROMPT_PER_1K + completion * COMPLETION_PER_1K) / 1000
    assert delta(after, before, "mesh_spend_usd_total", model=MODEL) == pytest.approx(float(spent), rel=1e-9)
    assert delta(after, before, "mesh_request_duration_seconds_count", model=MODEL) == 8
    assert delta(after, before, "mesh_request_duration_seconds_bucket", model=MODEL, le="+Inf") == 8
    assert delta(after, before, "mesh_time_to_first_token_seconds_count", model=MODEL) == 2
    assert delta(after, before, "mesh_upstream_duration_seconds_count", model=MODEL) >= 7
    assert after[("mesh_budget_leases_taken_total", frozenset())] >= 1
    assert {dict(labels)["read_model"] for name, labels in after if name == "mesh_projection_lag_events"} >= {
        "billing",
        "logs",
        "directory",
    }
    assert ("mesh_usage_spool_events", frozenset()) in after
    assert after[("process_cpu_seconds_total", frozenset())] > 0  # the process's own


def test_metrics_need_the_operator_token(mesh):
    assert http_calls.get(mesh.url + "/metrics", timeout=15).status_code == 401
    wrong = http_calls.get(mesh.url + "/metrics", headers={"authorization": "Bearer not-it"}, timeout=15)
    assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "forbidden"
    api_key = funded_key(mesh, "1").key
    assert (
        http_calls.get(mesh.url + "/metrics", headers={"authorization": f"Bearer {api_key}"}, timeout=15).status_code
        == 403
    )
