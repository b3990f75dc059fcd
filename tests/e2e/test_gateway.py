"""The OpenAI-compatible gateway over real HTTP: exact metering of streams, disconnects (a cut stream never
bills less than its reserved prompt), upstream errors (whose text stays in the server log), refused content,
embeddings, runtime price changes, no usage event lost when NATS goes away, and unknown keys answered from
memory."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import psycopg
import pytest

from api.embedded import NatsServer, free_port
from api.postgres_server import PostgresServer
from tests import http_calls
from tests.e2e.conftest import MeshProcess, funded_key

pytestmark = pytest.mark.long(waits=True)  # scheduled first, beside a module that computes (tests/conftest.py)


def write_config(path: Path, upstream_url: str) -> Path:
    path.write_text(f"""
[providers.acme]
kind = "openai-compatible"
base_url = "{upstream_url}/v1"

[providers.slow]
kind = "openai-compatible"
base_url = "{upstream_url}/v1"
timeout = 0.5

[[models]]
id = "acme/gpt-test"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 4096

[[models]]
id = "acme/vision"
provider = "acme"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 4096
context_tokens = 100000
image_tokens = 1000

[[models]]
id = "slow/gpt-test"
provider = "slow"
upstream = "gpt-test"
prompt_usd_per_1k = "0.5"
completion_usd_per_1k = "1.5"
max_output_tokens = 4096
""")
    return path


@pytest.fixture(scope="module")
def gw(tmp_path_factory, upstream):
    base = tmp_path_factory.mktemp("gateway")
    process = MeshProcess(
        base / "data",
        write_config(base / "mesh.toml", upstream.url),
        {"MESH_DISCONNECT_DRAIN_SECONDS": str(DRAIN_SECONDS)},
    )
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key(gw):
    return funded_key(gw, "50", label="gw").key


@pytest.fixture(autouse=True)
def calm_upstream(upstream):
    upstream.fail_with, upstream.delay, upstream.chunk_delay = None, 0.0, 0.0
    yield
    upstream.fail_with, upstream.delay, upstream.chunk_delay = None, 0.0, 0.0


def database_url(mesh: MeshProcess) -> str:
    return json.loads((mesh.data_dir / "running.json").read_text())["database_url"]


def usage_row(mesh: MeshProcess, trace_id: str, timeout: float = 10) -> dict:
    """The logged usage of one request (its row in the logs read model), once the projection has it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url(mesh)) as conn:
        while True:
            cur = conn.execute("select * from logs where trace_id = %s", (trace_id,))
            row = cur.fetchone()
            if row is not None:
                names = [c.name for c in cur.description]
                return dict(zip(names, row))
            assert time.monotonic() < deadline, f"no usage for {trace_id}"
            time.sleep(0.05)
            conn.commit()


def times_billed(mesh: MeshProcess, trace_id: str, timeout: float = 10) -> int:
    """How often billing counted a request (its rows in usage_recent), once billing's runner has it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(database_url(mesh), autocommit=True) as conn:
        while True:
            count = conn.execute("select count(*) from usage_recent where trace_id = %s", (trace_id,)).fetchone()[0]
            if count or time.monotonic() > deadline:
                return count
            time.sleep(0.05)


def post(mesh, key, body, **kwargs) -> httpx.Response:
    return http_calls.post(
        mesh.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30, **kwargs
    )


MESSAGES = [{"role": "system", "content": "answer briefly"}, {"role": "user", "content": "what is mesh"}]


def test_streamed_usage_equals_non_streamed_usage(gw, key):
    plain = post(gw, key, {"model": "acme/gpt-test", "messages": MESSAGES})
    with http_calls.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "acme/gpt-test", "messages": MESSAGES, "stream": True},
    ) as streamed:
        frames = [line for line in streamed.iter_lines() if line.startswith("data:")]
        stream_trace = streamed.headers["x-mesh-trace-id"]
    assert frames[-1] == "data: [DONE]"
    a, b = usage_row(gw, plain.headers["x-mesh-trace-id"]), usage_row(gw, stream_trace)
    for field in ("prompt_tokens", "completion_tokens", "cost", "prompt_per_1k", "completion_per_1k"):
        assert a[field] == b[field], field
    assert (a["stream"], b["stream"]) == (False, True) and not a["estimated"] and not b["estimated"]
    assert a["api"] == b["api"] == "chat.completions"
    assert b["first_token_us"] is not None and b["latency_us"] >= b["first_token_us"]


DRAIN_SECONDS = 5  # MESH_DISCONNECT_DRAIN_SECONDS of this module's Mesh


def leave_after_first_word(mesh, key, model="acme/gpt-test", messages=MESSAGES, **extra) -> str:
    """Start a stream with the openai SDK, hang up after the first word; the trace id."""
    client = openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)
    stream = client.chat.completions.create(model=model, messages=messages, stream=True, **extra)
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    return stream.response.headers["x-mesh-trace-id"]


def test_a_client_that_disconnects_mid_stream_is_billed_once_with_the_upstreams_own_usage(gw, key, upstream):
    upstream.chunk_delay = 0.2  # the rest of the stream takes ~2 s, within the drain window
    cut_before, requests_before = upstream.streams_cut_short, len(upstream.requests)
    trace = leave_after_first_word(gw, key)
    row = usage_row(gw, trace, timeout=DRAIN_SECONDS + 10)
    assert row["status"] == "error" and row["http_status"] == 499 and "disconnect" in row["error"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 7) and not row["estimated"]  # the whole reply
    assert row["cost"] == 5 * 500_000_000 + 7 * 1_500_000_000
    assert upstream.streams_cut_short == cut_before  # read to its end, not stopped
    assert upstream.requests[requests_before]["stream_options"] == {"include_usage": True}  # asked for upstream
    assert times_billed(gw, trace) == 1


def test_a_stream_that_runs_on_past_the_drain_window_is_billed_from_an_estimate_of_everything_sent(gw, key, upstream):
    upstream.chunk_delay = 1.0  # ~9 s in all: longer than the drain window
    cut_before = upstream.streams_cut_short
    tools = [
        {
            "type": "function",
            "function": {"name": "lookup", "description": "look a word up " * 40, "parameters": {"type": "object"}},
        }
    ]
    started = time.monotonic()
    trace = leave_after_first_word(gw, key, tools=tools)
    row = usage_row(gw, trace, timeout=DRAIN_SECONDS + 10)
    assert time.monotonic() - started >= DRAIN_SECONDS  # it waited for the upstream's usage first
    assert row["http_status"] == 499 and row["estimated"]
    assert row["prompt_tokens"] > len(json.dumps(tools)) // 4  # the tool definitions count, not the text alone
    assert 1 <= row["completion_tokens"] < 7  # what was generated until the upstream was closed
    deadline = time.monotonic() + 5
    while upstream.streams_cut_short == cut_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.streams_cut_short == cut_before + 1  # then the upstream stream was stopped
    assert times_billed(gw, trace) == 1


IMAGE = "data:image/png;base64,iVBORw0KGgo="
VISION_IMAGE_TOKENS = 1000  # image_tokens of acme/vision


def test_a_stream_cut_past_the_drain_window_bills_its_reserved_prompt_images_included(gw, upstream):
    """The client leaves after the first word and the upstream runs on past the drain window, so it never says
    what it used: the bill is the prompt bound the request reserved (each image at its reserved size, not the
    text alone) plus what was generated, flagged estimated, and the balance shows it."""
    _, token, key, _ = funded_key(gw, "50", label="gw")
    upstream.chunk_delay = 1.0  # ~9 s in all: longer than the drain window
    images = [{"type": "image_url", "image_url": {"url": IMAGE}} for _ in range(6)]
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is in these pictures"}, *images]}]
    trace = leave_after_first_word(gw, key, model="acme/vision", messages=messages)
    row = usage_row(gw, trace, timeout=DRAIN_SECONDS + 10)
    assert row["http_status"] == 499 and row["estimated"]
    assert 6 * VISION_IMAGE_TOKENS <= row["prompt_tokens"] < 6 * VISION_IMAGE_TOKENS + 100  # images + text bound
    assert 1 <= row["completion_tokens"] < 7  # what was generated until the upstream was closed
    cost = (row["prompt_tokens"] * 500_000_000_000 + row["completion_tokens"] * 1_500_000_000_000) // 1000
    assert row["cost"] == cost and times_billed(gw, trace) == 1
    deadline = time.monotonic() + 10
    while True:
        balance = http_calls.get(gw.url + "/api/billing/balance", headers={"authorization": f"Bearer {token}"}).json()
        if Decimal(balance["spend_usd"]) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert Decimal(balance["balance_usd"]) == Decimal(50) - Decimal(cost) / 10**12


CONTEXT_TOO_LONG = "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
PROVIDER_SECRETS = "Rate limit reached for gpt-4o in organization org-acme123 on tokens per min (TPM): Limit 30000"


@pytest.mark.parametrize(
    "upstream_status, text, status, code, says",
    [
        (400, CONTEXT_TOO_LONG, 400, "upstream_rejected", CONTEXT_TOO_LONG),
        (429, PROVIDER_SECRETS, 429, "upstream_rate_limited", "rate limiting; retry later"),
        (500, PROVIDER_SECRETS, 502, "upstream_error", "failed (HTTP 500)"),
        (503, PROVIDER_SECRETS, 502, "upstream_error", "failed (HTTP 503)"),
    ],
    ids=["400", "429", "500", "503"],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_upstream_errors_are_mapped_and_recorded(gw, key, upstream, upstream_status, text, status, code, says, stream):
    """The client's own mistake (a prompt too long) keeps the provider's words; the provider's rate limits and
    failures concern the operator's account with it (organisation, quotas): Mesh's own message, the provider's
    text in the server log only (not in the request log the account reads either)."""
    upstream.fail_with = (upstream_status, text)
    r = post(gw, key, {"model": "acme/gpt-test", "messages": MESSAGES, "stream": stream})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and "acme" in error["message"] and says in error["message"]
    row = usage_row(gw, r.headers["x-mesh-trace-id"])
    assert (row["status"], row["http_status"], row["cost"]) == ("error", status, 0)
    if upstream_status != 400:
        assert "org-acme123" not in r.text and "org-acme123" not in row["error"]
        assert "org-acme123" in gw.output()  # the operator still learns what the provider said


def test_a_file_part_naming_an_uploaded_file_is_refused(gw, key, upstream):
    """A `file_id` would be looked up in Mesh's own account with the provider: refused, nothing sent upstream.
    A file sent inline goes on."""
    before = len(upstream.requests)
    by_id = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "read"}, {"type": "file", "file": {"file_id": "file-abc"}}],
        }
    ]
    r = post(gw, key, {"model": "acme/gpt-test", "messages": by_id})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_content", "messages")
    assert "file_id" in error["message"] and "file_data" in error["message"]
    assert len(upstream.requests) == before
    inline = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,AA=="}}
    r = post(gw, key, {"model": "acme/gpt-test", "messages": [{"role": "user", "content": [inline]}]})
    assert r.status_code == 200, r.text
    assert upstream.requests[-1]["messages"][0]["content"] == [inline]


def test_a_prediction_is_refused_naming_the_field(gw, key, upstream):
    """Rejected prediction tokens bill as completion tokens beyond what the request reserved: refused."""
    before = len(upstream.requests)
    prediction = {"type": "content", "content": "x " * 5000}
    r = post(gw, key, {"model": "acme/gpt-test", "messages": MESSAGES, "prediction": prediction})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", "prediction")
    assert "prediction" in error["message"] and len(error["message"]) < 500  # the value is not echoed whole
    assert len(upstream.requests) == before


def test_an_upstream_timeout_is_a_504_naming_the_provider(gw, key, upstream):
    upstream.delay = 1.5
    r = post(gw, key, {"model": "slow/gpt-test", "messages": MESSAGES})
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert "slow" in r.json()["error"]["message"]


def test_embeddings_are_metered(gw, key):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    raw = client.embeddings.with_raw_response.create(model="acme/gpt-test", input=["one two", "three"])
    result = raw.parse()
    assert len(result.data) == 2 and result.usage.prompt_tokens == 3
    row = usage_row(gw, raw.headers["x-mesh-trace-id"])
    assert (row["prompt_tokens"], row["completion_tokens"]) == (3, 0) and row["cost"] == 3 * 500_000_000_000 // 1000
    assert row["api"] == "embeddings"
    echo = client.embeddings.create(model="mesh/echo", input="hello")
    assert len(echo.data[0].embedding) == 8


def test_a_price_change_applies_to_requests_that_start_after_it(gw, key, upstream):
    operator = {"authorization": f"Bearer {gw.operator_token}"}
    upstream.chunk_delay = 0.1
    traces = {}

    def slow_stream():
        with http_calls.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {key}"},
            json={"model": "acme/gpt-test", "messages": MESSAGES, "stream": True},
            timeout=30,
        ) as r:
            traces["before"] = r.headers["x-mesh-trace-id"]
            for _ in r.iter_lines():
                pass

    thread = threading.Thread(target=slow_stream)
    thread.start()
    time.sleep(0.3)  # the stream has started at the old price
    try:
        changed = http_calls.put(
            gw.url + "/admin/models/acme/gpt-test",
            headers=operator,
            json={"prompt_usd_per_1k": "2", "completion_usd_per_1k": "4"},
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["prompt_usd_per_1k"] == "2.000000"
        thread.join()
        upstream.chunk_delay = 0
        after = post(gw, key, {"model": "acme/gpt-test", "messages": MESSAGES})
        assert after.status_code == 200, after.text
        old, new = usage_row(gw, traces["before"]), usage_row(gw, after.headers["x-mesh-trace-id"])
        assert (old["prompt_per_1k"], old["completion_per_1k"]) == (500_000_000_000, 1_500_000_000_000)
        assert (new["prompt_per_1k"], new["completion_per_1k"]) == (2 * 10**12, 4 * 10**12)
        models = http_calls.get(gw.url + "/api/models", headers={"authorization": f"Bearer {key}"})
        assert models.status_code == 403  # an API key does not reach /api
    finally:
        http_calls.put(
            gw.url + "/admin/models/acme/gpt-test",
            headers=operator,
            json={"prompt_usd_per_1k": "0.5", "completion_usd_per_1k": "1.5"},
        )


def test_the_operator_switches_models_off_and_on(gw, key):
    operator = {"authorization": f"Bearer {gw.operator_token}"}
    s = http_calls.post(
        gw.url + "/api/signup", json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "long enough"}
    ).json()
    account = {"authorization": f"Bearer {s['management_token']}"}
    listed = http_calls.get(gw.url + "/api/models", headers=account).json()["data"]
    assert {m["id"]: m["prompt_usd_per_1k"] for m in listed}["acme/gpt-test"] == "0.500000"
    free = http_calls.get(gw.url + "/api/models", headers=account, params={"free": "true"}).json()["data"]
    assert [m["id"] for m in free] == ["mesh/echo"]
    before = datetime.now(timezone.utc)
    assert (
        http_calls.put(gw.url + "/admin/models/slow/gpt-test", headers=operator, json={"enabled": False}).json()[
            "enabled"
        ]
        is False
    )
    try:
        r = post(gw, key, {"model": "slow/gpt-test", "messages": MESSAGES})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
        assert "slow/gpt-test" not in [
            m["id"] for m in http_calls.get(gw.url + "/api/models", headers=account).json()["data"]
        ]
        during = datetime.now(timezone.utc)
    finally:
        http_calls.put(gw.url + "/admin/models/slow/gpt-test", headers=operator, json={"enabled": True})

    def listed_at(at: datetime) -> list[str]:
        answer = http_calls.get(gw.url + "/api/models", headers=account, params={"at": at.isoformat()})
        assert answer.status_code == 200, answer.text
        return [m["id"] for m in answer.json()["data"]]

    # the catalog at a past instant: the switch in force then (the read model has it once projected)
    deadline = time.monotonic() + 10
    while "slow/gpt-test" in listed_at(during):
        assert time.monotonic() < deadline, "the switch never showed at its time"
        time.sleep(0.05)
    assert "slow/gpt-test" in listed_at(before)
    assert "slow/gpt-test" in [m["id"] for m in http_calls.get(gw.url + "/api/models", headers=account).json()["data"]]
    naive = http_calls.get(gw.url + "/api/models", headers=account, params={"at": "2026-12-01T10:00:00"})
    assert naive.status_code == 400 and "time zone" in naive.json()["error"]["message"]
    bad = http_calls.put(gw.url + "/admin/models/acme/gpt-test", headers=operator, json={"prompt_usd_per_1k": "-1"})
    assert bad.status_code == 400
    assert (
        http_calls.put(gw.url + "/admin/models/none/such", headers=operator, json={"enabled": True}).status_code == 404
    )


def test_no_usage_event_is_lost_or_doubled_when_nats_goes_away(tmp_path, postgres_server, upstream):
    nats_dir, port = tmp_path / "nats", free_port()
    nats_server = NatsServer(nats_dir, port=port).start()
    database = "outage_" + uuid.uuid4().hex[:8]
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f'create database "{database}"')
    db_url = postgres_server.url.rsplit("/", 1)[0] + "/" + database
    mesh = MeshProcess(
        tmp_path / "data",
        write_config(tmp_path / "mesh.toml", upstream.url),
        {"MESH_NATS_URL": nats_server.url, "MESH_DATABASE_URL": db_url, "MESH_OPERATOR_TOKEN": "mo-outage"},
    )
    mesh.start()
    try:
        s = http_calls.post(mesh.url + "/api/signup", json={"email": "outage@example.com", "password": "long enough"})
        k = http_calls.post(
            mesh.url + "/api/keys",
            headers={"authorization": f"Bearer {s.json()['management_token']}"},
            json={"label": "outage"},
        ).json()["key"]
        served = []

        def burst(n):
            for i in range(n):
                r = post(mesh, k, {"model": "mesh/echo", "messages": [{"role": "user", "content": f"hi {i}"}]})
                assert r.status_code == 200, r.text
                served.append(r.headers["x-mesh-trace-id"])

        burst(20)
        nats_server.stop()
        burst(20)  # NATS is down: the gateway keeps serving and spools
        assert (mesh.data_dir / "spool" / "usage.jsonl").exists()
        nats_server = NatsServer(nats_dir, port=port).start()
        burst(20)
        deadline = time.monotonic() + 30
        with psycopg.connect(db_url, autocommit=True) as conn:
            while True:
                rows = conn.execute("select count(*), count(distinct trace_id) from usage_recent").fetchone()
                if rows[0] >= len(served) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            billed = {str(r[0]) for r in conn.execute("select trace_id from usage_recent")}
        assert rows == (60, 60) and billed == set(served)
        import asyncio
        import nats

        async def usage_messages() -> int:
            nc = await nats.connect(nats_server.url)
            info = await nc.jetstream().stream_info("MESH", subjects_filter="mesh.usage.>")
            await nc.close()
            return sum((info.state.subjects or {}).values())

        assert asyncio.run(usage_messages()) == 60  # on the stream too: none lost, none twice
    finally:
        mesh.stop()
        nats_server.stop()


def test_unknown_keys_are_answered_from_memory_and_a_new_key_works_at_once(tmp_path, upstream):
    """A flood of requests with an unknown key costs PostgreSQL one key lookup, not one each (counted by
    pg_stat_statements on the real database); a key made right after is accepted on its first request."""
    pg = PostgresServer(tmp_path / "pg").start()
    nats_server = None
    mesh = None
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("alter system set shared_preload_libraries = 'pg_stat_statements'")
        pg.stop()
        pg.start()
        database = "keys_" + uuid.uuid4().hex[:8]
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute(f'create database "{database}"')
        db_url = pg.url.rsplit("/", 1)[0] + "/" + database
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("create extension pg_stat_statements")
        nats_server = NatsServer(tmp_path / "nats").start()
        mesh = MeshProcess(
            tmp_path / "data",
            write_config(tmp_path / "mesh.toml", upstream.url),
            {"MESH_NATS_URL": nats_server.url, "MESH_DATABASE_URL": db_url, "MESH_OPERATOR_TOKEN": "mo-keys"},
        )
        mesh.start()

        def key_lookups() -> int:
            with psycopg.connect(db_url, autocommit=True) as conn:
                return conn.execute(
                    "select coalesce(sum(calls), 0) from pg_stat_statements where query like '%from api_key_secrets%'"
                ).fetchone()[0]

        before = key_lookups()
        unknown = "mk-" + uuid.uuid4().hex
        for _ in range(50):
            r = post(mesh, unknown, {"model": "mesh/echo", "messages": MESSAGES})
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
        assert key_lookups() - before <= 2  # the first request (and one more should the memory have expired)
        key = funded_key(mesh, "50", label="gw").key
        r = post(mesh, key, {"model": "mesh/echo", "messages": MESSAGES})
        assert r.status_code == 200, r.text
    finally:
        if mesh is not None:
            mesh.stop()
        if nats_server is not None:
            nats_server.stop()
        pg.stop()
