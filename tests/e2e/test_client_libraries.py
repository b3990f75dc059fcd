"""Client libraries that take bare model names (llama-index's `OpenAI`, litellm, openai-agents) reach Mesh through
the shared alias, are billed, and read back the Mesh id and the exact charge Mesh logged (`usage.cost`)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from decimal import Decimal

import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import OPENAI_NAMED_ALIAS, SHARED_ALIAS, funded_key

MODEL = "acme/gpt-test"
UPSTREAM = "gpt-test"  # the fake upstream's own name of the model (mesh.toml `upstream`)


def logged(mesh, funded, trace_id: str) -> dict:
    """The request's log entry, once the log has it."""
    auth = {"authorization": f"Bearer {funded.token}"}
    for _ in range(100):
        entry = http_calls.get(f"{mesh.url}/api/logs/{trace_id}", headers=auth, timeout=15)
        if entry.status_code == 200:
            return entry.json()
        time.sleep(0.1)
    raise AssertionError(f"no log entry for {trace_id}")


def logged_since(mesh, funded, count: int) -> list[dict]:
    """The key's newest `count` log entries, once there are that many."""
    auth = {"authorization": f"Bearer {funded.token}"}
    for _ in range(100):
        entries = http_calls.get(f"{mesh.url}/api/logs", headers=auth, timeout=15).json()["data"]
        if len(entries) >= count:
            return entries
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} log entries")


def test_the_answer_names_the_mesh_id_and_states_the_logged_cost(mesh):
    """Chat completions, plain and streamed, sent the alias: `model` is the Mesh id in the answer and every chunk,
    the upstream's own name is in a header, and `usage.cost` (a JSON number) and `usage.cost_usd` (a decimal
    string) equal the cost logged, digit for digit, as does x-mesh-cost-usd."""
    funded = funded_key(mesh, "1")
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model=SHARED_ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=10
    )
    entry = logged(mesh, funded, raw.headers["x-mesh-trace-id"])
    assert Decimal(entry["cost_usd"]) > 0
    assert raw.headers["x-mesh-upstream-model"] == UPSTREAM
    assert Decimal(raw.headers["x-mesh-cost-usd"]) == Decimal(entry["cost_usd"])
    document = raw.http_response.json(parse_float=Decimal)
    assert document["model"] == MODEL == raw.parse().model
    assert document["usage"]["cost"] == Decimal(document["usage"]["cost_usd"]) == Decimal(entry["cost_usd"])

    with http_calls.stream(
        "POST",
        f"{mesh.url}/v1/chat/completions",
        headers={"authorization": f"Bearer {funded.key}"},
        json={
            "model": SHARED_ALIAS,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=30,
    ) as streamed:
        assert streamed.headers["x-mesh-upstream-model"] == UPSTREAM
        lines = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
        trace_id = streamed.headers["x-mesh-trace-id"]
    chunks = [json.loads(line, parse_float=Decimal) for line in lines if line != "[DONE]"]
    assert len(chunks) > 2 and all(chunk["model"] == MODEL for chunk in chunks)
    final = chunks[-1]["usage"]
    assert final["cost"] == Decimal(final["cost_usd"]) == Decimal(logged(mesh, funded, trace_id)["cost_usd"]) > 0


def test_embeddings_and_the_other_front_doors_name_the_mesh_id_and_the_cost(mesh):
    funded = funded_key(mesh, "1")
    auth = {"authorization": f"Bearer {funded.key}"}
    embedded = http_calls.post(
        f"{mesh.url}/v1/embeddings", headers=auth, json={"model": SHARED_ALIAS, "input": "hello"}, timeout=30
    )
    assert embedded.status_code == 200 and embedded.json()["model"] == MODEL
    entry = logged(mesh, funded, embedded.headers["x-mesh-trace-id"])
    assert Decimal(embedded.headers["x-mesh-cost-usd"]) == Decimal(entry["cost_usd"])
    assert embedded.json(parse_float=Decimal)["usage"]["cost"] == Decimal(entry["cost_usd"])

    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    raw = sdk.responses.with_raw_response.create(model=SHARED_ALIAS, input="hi", max_output_tokens=10)
    entry = logged(mesh, funded, raw.headers["x-mesh-trace-id"])
    usage = raw.http_response.json(parse_float=Decimal)["usage"]
    assert raw.parse().model == MODEL and raw.headers["x-mesh-upstream-model"] == UPSTREAM
    assert usage["cost"] == Decimal(usage["cost_usd"]) == Decimal(raw.headers["x-mesh-cost-usd"])
    assert usage["cost"] == Decimal(entry["cost_usd"]) > 0

    with sdk.responses.stream(model=SHARED_ALIAS, input="hi", max_output_tokens=10) as stream:
        events = list(stream)
    completed = events[-1]
    assert completed.type == "response.completed" and completed.response.model == MODEL
    cost = completed.response.usage.model_extra["cost_usd"]
    assert Decimal(cost) == Decimal(logged_since(mesh, funded, 3)[0]["cost_usd"]) > 0


def test_litellm_with_a_bare_name_reads_the_charge_as_its_response_cost(mesh, monkeypatch):
    """litellm addresses an OpenAI-compatible server as `openai/<name>` with `api_base`: it sends the bare name,
    and reads the upstream's `usage.cost` as the request's `response_cost` instead of its own price list."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no download of its price list
    litellm = pytest.importorskip("litellm")
    funded = funded_key(mesh, "1")
    response = litellm.completion(
        model=f"openai/{SHARED_ALIAS}",
        api_base=mesh.url + "/v1",
        api_key=funded.key,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=10,
    )
    assert response.choices[0].message.content
    entry = logged_since(mesh, funded, 1)[0]
    assert (entry["model"], entry["requested_model"]) == (MODEL, SHARED_ALIAS)
    assert MODEL in response.model  # litellm keeps the answer's model
    charged = Decimal(entry["cost_usd"])
    assert Decimal(str(response.usage.cost)) == charged > 0
    assert Decimal(str(response._hidden_params["response_cost"])) == charged


# llama-index-llms-openai 0.8 requires openai<3, openai-agents 0.24 openai>=3: it runs from a virtualenv of its own
# (.ci/run makes one, `python3 -m venv .ci/llama && .ci/llama/bin/pip install llama-index-llms-openai==0.8.3`)
LLAMA_INDEX_PYTHON = os.environ.get("MESH_TEST_LLAMA_INDEX_PYTHON")
LLAMA_INDEX_CHAT = """
import json, sys
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAI
url, key, model = sys.argv[1:]
llm = OpenAI(model=model, api_base=url, api_key=key, max_tokens=10, max_retries=0)
answer = llm.chat([ChatMessage(role="user", content="hi")])
print(json.dumps({"content": answer.message.content, "raw": answer.raw.model_dump()}))
"""


@pytest.mark.skipif(LLAMA_INDEX_PYTHON is None, reason="no virtualenv with llama-index (MESH_TEST_LLAMA_INDEX_PYTHON)")
def test_llama_index_with_a_bare_name_is_billed(mesh):
    """llama-index's `OpenAI` takes only the names in its own list of OpenAI's models ("Unknown model" otherwise,
    before any request): a model aliased as one of them (`aliases = ["gpt-4o-mini"]`) reaches Mesh."""
    funded = funded_key(mesh, "1")
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    assert sdk.models.retrieve(OPENAI_NAMED_ALIAS).id == MODEL  # GET /v1/models/{alias}: the Mesh id
    ran = subprocess.run(
        [str(LLAMA_INDEX_PYTHON), "-c", LLAMA_INDEX_CHAT, mesh.url + "/v1", funded.key, OPENAI_NAMED_ALIAS],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    answer = json.loads(ran.stdout, parse_float=Decimal)
    assert answer["content"] and answer["raw"]["model"] == MODEL
    entry = logged_since(mesh, funded, 1)[0]
    assert (entry["model"], entry["requested_model"]) == (MODEL, OPENAI_NAMED_ALIAS)
    assert answer["raw"]["usage"]["cost"] == Decimal(answer["raw"]["usage"]["cost_usd"]) == Decimal(entry["cost_usd"])


def test_openai_agents_with_a_bare_name_is_billed(mesh):
    """The Agents SDK's default model (the Responses API) with a bare name."""
    agents = pytest.importorskip("agents")
    funded = funded_key(mesh, "1")
    client = openai.AsyncOpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    agents.set_tracing_disabled(True)
    agents.set_default_openai_client(client, use_for_tracing=False)
    agent = agents.Agent(name="greeter", instructions="say hi", model=SHARED_ALIAS)
    result = asyncio.run(agents.Runner.run(agent, "hi"))
    assert result.final_output
    entry = logged_since(mesh, funded, 1)[0]
    assert (entry["model"], entry["requested_model"], entry["api"]) == (MODEL, SHARED_ALIAS, "responses")
    assert result.context_wrapper.usage.requests == 1 and Decimal(entry["cost_usd"]) > 0
