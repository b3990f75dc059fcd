"""Output limits and affordability through `mesh up`, with the openai SDK against a fake OpenAI that refuses
`max_tokens` for gpt-5-style models as OpenAI does: no limit is added or shrunk behind the client's back, an
unaffordable request gets a 402 naming the max_tokens it can afford, fit_to_budget keys get a fitted limit said in
a header, and images, files and tools count in the reservation."""

from __future__ import annotations

import json
import re
from decimal import Decimal

import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import UPSTREAM_KEY, MeshProcess, funded_key
from tests.e2e.test_walking_skeleton import wait_for_balance
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.server import BackgroundServer

MODEL = "oai/gpt-5-mini"
SERVER_MODEL = "vllm/llama"  # on an openai-compatible server with fields of its own (dear: no 402 names it)
REPLY_WORDS = 40  # the upstream's natural answer length
MAX_OUTPUT = 100
CONTEXT = 4000
PROMPT_PER_1K, COMPLETION_PER_1K = Decimal("0.5"), Decimal("1.5")
HI = [{"role": "user", "content": "hi"}]
# the gateway's bound for HI: 16 (prompt) + 8 (message) + 30 bytes of '{"role":"user","content":"hi"}'
HI_BOUND = 16 + 8 + 30


def usd(prompt_tokens: int, completion_tokens: int) -> Decimal:
    return (prompt_tokens * PROMPT_PER_1K + completion_tokens * COMPLETION_PER_1K) / 1000


WORST = usd(HI_BOUND, MAX_OUTPUT)  # what a request with HI and no limit reserves
COST = usd(1, REPLY_WORDS)  # what it really costs


@pytest.fixture(scope="module")
def limits_mesh(tmp_path_factory):
    fake = FakeOpenAI(reply_words=REPLY_WORDS, api_key=UPSTREAM_KEY)
    with BackgroundServer(fake) as server:
        base = tmp_path_factory.mktemp("limits")
        config = base / "mesh.toml"
        config.write_text(f"""
[providers.oai]
kind = "openai"
base_url = "{server.url}/v1"
api_key_env = "ACME_API_KEY"

[[models]]
id = "{MODEL}"
provider = "oai"
upstream = "gpt-5-mini"
prompt_usd_per_1k = "{PROMPT_PER_1K}"
completion_usd_per_1k = "{COMPLETION_PER_1K}"
max_output_tokens = {MAX_OUTPUT}
context_tokens = {CONTEXT}

[[models]]
id = "oai/gpt-4o"
provider = "oai"
upstream = "gpt-4o"
prompt_usd_per_1k = "2.5"
completion_usd_per_1k = "10"

[providers.vllm]
kind = "openai-compatible"
base_url = "{server.url}/v1"
api_key_env = "ACME_API_KEY"
extra_fields = ["top_k", "min_p", "repetition_penalty", "chat_template_kwargs"]

[[models]]
id = "{SERVER_MODEL}"
provider = "vllm"
upstream = "llama"
prompt_usd_per_1k = "100"
completion_usd_per_1k = "1000"
""")
        mesh = MeshProcess(base / "data", config)
        mesh.start()
        yield mesh, fake
        mesh.stop()


def client(mesh: MeshProcess, key: dict) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.url + "/v1", api_key=key["key"], max_retries=0)


def refusal(exc: openai.APIStatusError) -> dict:
    return exc.response.json()["error"]


def test_models_show_their_output_limit_and_context(limits_mesh):
    mesh, _ = limits_mesh
    s = funded_key(mesh, "1", label="limits")
    models = {
        m["id"]: m
        for m in http_calls.get(mesh.url + "/api/models", headers={"authorization": f"Bearer {s.token}"}).json()["data"]
    }
    assert (models[MODEL]["max_output_tokens"], models[MODEL]["context_tokens"]) == (MAX_OUTPUT, CONTEXT)
    assert (models["oai/gpt-4o"]["max_output_tokens"], models["oai/gpt-4o"]["context_tokens"]) == (16384, 128000)
    admin = http_calls.get(mesh.url + "/admin/models", headers={"authorization": f"Bearer {mesh.operator_token}"})
    assert {m["id"]: m["max_output_tokens"] for m in admin.json()["data"]}[MODEL] == MAX_OUTPUT


def test_a_gpt5_model_serves_plain_streamed_and_limited_requests(limits_mesh):
    mesh, fake = limits_mesh
    key = funded_key(mesh, "1", label="limits").created
    sdk = client(mesh, key)
    plain = sdk.chat.completions.create(model=MODEL, messages=HI)
    assert plain.usage.completion_tokens == REPLY_WORDS  # not cut: no limit was added
    sent = fake.requests[-1]
    assert "max_tokens" not in sent and "max_completion_tokens" not in sent
    streamed = list(sdk.chat.completions.create(model=MODEL, messages=HI, stream=True))
    assert len("".join(c.choices[0].delta.content or "" for c in streamed if c.choices).split()) == REPLY_WORDS
    limited = sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=5)
    assert limited.usage.completion_tokens == 5
    assert fake.requests[-1]["max_completion_tokens"] == 5 and "max_tokens" not in fake.requests[-1]
    both = sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=7, max_completion_tokens=7)
    assert both.usage.completion_tokens == 7
    limited_stream = list(sdk.chat.completions.create(model=MODEL, messages=HI, max_completion_tokens=3, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in limited_stream if c.choices) == "w0 w1 w2"


def test_limits_that_disagree_or_exceed_the_model_and_unknown_or_priced_fields_are_refused(limits_mesh):
    mesh, fake = limits_mesh
    key = funded_key(mesh, "1", label="limits").created
    sdk = client(mesh, key)
    seen = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as disagree:
        sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=5, max_completion_tokens=6)
    assert "'max_tokens' (5) and 'max_completion_tokens' (6) disagree" in refusal(disagree.value)["message"]
    with pytest.raises(openai.BadRequestError) as above:
        sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=MAX_OUTPUT + 1)
    assert refusal(above.value)["param"] == "max_tokens"
    assert f"at most {MAX_OUTPUT} completion tokens" in refusal(above.value)["message"]
    with pytest.raises(openai.BadRequestError) as unknown:
        sdk.chat.completions.create(model=MODEL, messages=HI, extra_body={"frobnicate": True})
    error = refusal(unknown.value)
    assert error["param"] == "frobnicate" and "'frobnicate'" in error["message"]
    assert "max_completion_tokens" in error["message"]  # it lists what is allowed
    with pytest.raises(openai.BadRequestError) as tier:
        sdk.chat.completions.create(model=MODEL, messages=HI, service_tier="priority")
    assert refusal(tier.value)["param"] == "service_tier"
    assert len(fake.requests) == seen  # nothing reached the upstream
    sdk.chat.completions.create(model=MODEL, messages=HI, service_tier="auto", temperature=1)  # allowed


def test_thirty_sequential_requests_on_a_small_balance_are_never_cut_short(limits_mesh):
    mesh, _ = limits_mesh
    requests = 30
    credits = COST * requests + WORST + Decimal("0.000008")  # covers 30 requests and the worst case of the 31st
    s = funded_key(mesh, str(credits), label="limits")
    key = s.created
    sdk = client(mesh, key)
    for n in range(requests + 1):
        answer = sdk.chat.completions.create(model=MODEL, messages=HI)
        assert answer.usage.completion_tokens == REPLY_WORDS, f"request {n + 1} was cut short"
    left = credits - COST * (requests + 1)
    assert left < WORST  # the next one is not covered any more
    with pytest.raises(openai.APIStatusError) as unaffordable:
        sdk.chat.completions.create(model=MODEL, messages=HI)
    assert unaffordable.value.status_code == 402
    error = refusal(unaffordable.value)
    assert (error["code"], error["param"]) == ("account_balance", "max_tokens")
    affordable = int((left - usd(HI_BOUND, 0)) / usd(0, 1))
    assert f"send max_tokens ≤ {affordable}" in error["message"], error["message"]
    # N is exactly the frontier: N + 1 is refused, N is served (and not cut: the answer is its natural length)
    with pytest.raises(openai.APIStatusError):
        sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=affordable + 1)
    assert sdk.chat.completions.create(model=MODEL, messages=HI, max_tokens=affordable).usage.completion_tokens == min(
        affordable, REPLY_WORDS
    )
    spent = COST * (requests + 1) + usd(1, min(affordable, REPLY_WORDS))
    assert Decimal(wait_for_balance(mesh, s.token, credits - spent)["balance_usd"]) == credits - spent


def test_a_fit_to_budget_key_gets_the_limit_the_budget_affords_and_is_told(limits_mesh):
    mesh, fake = limits_mesh
    credits = usd(HI_BOUND, 0) + usd(0, 12)  # the prompt's worst case and 12 completion tokens
    s = funded_key(mesh, str(credits), label="limits")
    key = s.created
    auth = {"authorization": f"Bearer {s.token}"}
    assert key["fit_to_budget"] is False
    with pytest.raises(openai.APIStatusError) as refused:  # not opted in: a 402 naming what it affords
        client(mesh, key).chat.completions.create(model=MODEL, messages=HI)
    assert "send max_tokens ≤ 12" in refusal(refused.value)["message"]
    changed = http_calls.patch(f"{mesh.url}/api/keys/{key['id']}", headers=auth, json={"fit_to_budget": True})
    assert changed.status_code == 200 and changed.json()["fit_to_budget"] is True
    assert http_calls.get(f"{mesh.url}/api/keys/{key['id']}", headers=auth).json()["fit_to_budget"] is True
    raw = client(mesh, key).chat.completions.with_raw_response.create(model=MODEL, messages=HI)
    assert raw.headers["x-mesh-max-tokens"] == "12"
    assert raw.parse().usage.completion_tokens == 12
    assert fake.requests[-1]["max_completion_tokens"] == 12 and "max_tokens" not in fake.requests[-1]
    wait_for_balance(mesh, s.token, credits - usd(1, 12))
    more = usd(1, 5)  # what is left is then the prompt's worst case and 5 completion tokens
    http_calls.post(
        f"{mesh.url}/admin/accounts/{s.account_id}/credits",
        json={"amount_usd": str(more), "reason": "t"},
        headers={"authorization": f"Bearer {mesh.operator_token}"},
    ).raise_for_status()
    assert Decimal(wait_for_balance(mesh, s.token, usd(HI_BOUND, 5))["balance_usd"]) == usd(HI_BOUND, 5)
    with http_calls.stream(
        "POST",
        mesh.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {key['key']}"},
        json={"model": MODEL, "messages": HI, "stream": True},
    ) as streamed:
        fitted = int(streamed.headers["x-mesh-max-tokens"])
        chunks = [json.loads(line[6:]) for line in streamed.iter_lines() if line.startswith("data: {")]
    assert fitted == 5  # what is left now
    words = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).split()
    assert len(words) == fitted
    created = http_calls.post(
        mesh.url + "/api/keys", headers=auth, json={"label": "fits", "fit_to_budget": True}
    ).json()
    assert created["fit_to_budget"] is True


def test_images_files_and_tools_are_reserved(limits_mesh):
    mesh, _ = limits_mesh
    # a text prompt's worst case and 100 prompt tokens more
    key = funded_key(mesh, str(WORST + usd(100, 0)), label="limits").created
    sdk = client(mesh, key)
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
            ],
        }
    ]
    pdf = [{"role": "user", "content": [{"type": "file", "file": {"file_data": "data:application/pdf;base64,AA=="}}]}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    bounds = {}
    for name, kwargs in {
        "image": {"messages": image},
        "file": {"messages": pdf},
        "tools": {"messages": HI, "tools": tools},
    }.items():
        with pytest.raises(openai.APIStatusError) as refused:
            sdk.chat.completions.create(model=MODEL, **kwargs)
        assert refused.value.status_code == 402, name
        bounds[name] = int(re.search(r"a prompt of up to (\d+) tokens", refusal(refused.value)["message"])[1])
    assert bounds["image"] >= HI_BOUND + 3779  # OpenAI: at most 1,536 patches x 2.46 for one image
    assert bounds["file"] == CONTEXT  # nothing smaller than the model's context is safe for a file
    assert bounds["tools"] >= HI_BOUND + 530
    assert sdk.chat.completions.create(model=MODEL, messages=HI).usage.completion_tokens == REPLY_WORDS


def test_a_402_says_what_is_left_affords_on_the_other_models_the_key_may_use(limits_mesh):
    mesh, _ = limits_mesh
    credits = usd(HI_BOUND, 0) + usd(0, 50)  # on MODEL: the prompt's worst case and 50 completion tokens
    s = funded_key(mesh, str(credits), label="elsewhere")
    with pytest.raises(openai.APIStatusError) as refused:
        client(mesh, s.created).chat.completions.create(model="oai/gpt-4o", messages=HI)
    assert refused.value.status_code == 402
    message = refusal(refused.value)["message"]
    assert message.endswith(f"; other models this API key may use afford: {MODEL} up to 50 completion tokens")
    assert "mesh/" not in message  # Mesh's echo model is no alternative
    answer = client(mesh, s.created).chat.completions.create(model=MODEL, messages=HI, max_tokens=50)
    assert answer.usage.completion_tokens == min(50, REPLY_WORDS)  # and it does: the advice holds


def test_an_openai_compatible_servers_own_fields_pass_as_sent_where_the_operator_allowed_them(limits_mesh):
    mesh, fake = limits_mesh
    s = funded_key(mesh, "50", label="server fields")
    own = {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "chat_template_kwargs": {"enable_thinking": False}}
    answer = client(mesh, s.created).chat.completions.create(
        model=SERVER_MODEL, messages=HI, max_tokens=10, extra_body=own
    )
    assert answer.choices[0].message.content
    assert {name: fake.requests[-1][name] for name in own} == own  # passed as sent
    with pytest.raises(openai.BadRequestError) as refused:  # OpenAI itself does not take them: refused, named
        client(mesh, s.created).chat.completions.create(model=MODEL, messages=HI, max_tokens=10, extra_body=own)
    assert (
        refused.value.body["code"] == "unsupported_parameter" and refused.value.body["param"] == "chat_template_kwargs"
    )
