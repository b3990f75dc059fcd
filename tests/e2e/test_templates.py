"""Prompt templates through `mesh up`: managed over the JSON API, used from the official openai SDK."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import openai
import pytest

from domain.usage import UsageRecorded
from tests import http_calls
from tests.e2e.test_keys import new_key, owner  # noqa: F401 (a fixture)
from tests.e2e.test_walking_skeleton import api, sign_up
from tests.fakes.openai_upstream import count_words

MODEL = "acme/gpt-test"


def template_body(name: str, **overrides) -> dict:
    return {
        "name": name,
        "description": "support greeting",
        "messages": [
            {"role": "system", "content": "You are {{persona}}."},
            {"role": "user", "content": "My name is {{ name }}."},
        ],
        "defaults": {"model": MODEL, "temperature": 0.3, "stop": ["END"]},
        **overrides,
    }


def create(mesh, token: str, name: str | None = None, **overrides) -> dict:
    r = api(
        mesh, "POST", "/api/templates", token, json=template_body(name or f"greet-{uuid.uuid4().hex[:6]}", **overrides)
    )
    assert r.status_code == 201, r.text
    return r.json()


def client(mesh, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.url + "/v1", api_key=key, max_retries=0)


def chat(mesh, key: str, body: dict) -> httpx.Response:
    return http_calls.post(
        mesh.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=body, timeout=30
    )


def usage_event(mesh, account_id: str, trace_id: str, timeout: float = 10) -> UsageRecorded:
    """The usage event of one request, read from the stream itself."""
    import nats

    nats_url = json.loads((mesh.data_dir / "running.json").read_text())["nats_url"]

    async def read() -> UsageRecorded:
        nc = await nats.connect(nats_url)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    msg = await nc.jetstream().get_last_msg("MESH", f"mesh.usage.{account_id}")
                    event = msgspec.json.decode(msg.data, type=UsageRecorded)
                    if str(event.trace_id) == trace_id:
                        return event
                except nats.js.errors.NotFoundError:
                    pass
                assert time.monotonic() < deadline, f"no usage event for {trace_id}"
                await asyncio.sleep(0.05)
        finally:
            await nc.close()

    return asyncio.run(read())


def test_a_template_reaches_the_upstream_rendered_with_its_defaults(mesh, fake_openai, owner):  # noqa: F811
    account_id, token = owner
    template = create(mesh, token)
    assert template["version"] == 1 and template["variables"] == ["persona", "name"]
    key = new_key(mesh, token)["key"]

    raw = client(mesh, key).chat.completions.with_raw_response.create(
        model=MODEL,
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        extra_body={"template": template["name"], "variables": {"persona": "a {{name}} pirate", "name": "Ada"}},
    )
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content
    sent = fake_openai.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "You are a {{name}} pirate."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    assert sent["temperature"] == 0.3 and sent["stop"] == ["END"] and sent["model"] == "gpt-test"
    assert "template" not in sent and "variables" not in sent
    assert raw.headers["x-mesh-template"] == f"{template['id']}@1"

    usage = usage_event(mesh, account_id, raw.headers["x-mesh-trace-id"])
    assert str(usage.template_id) == template["id"] and usage.template_version == 1
    assert usage.prompt_tokens == count_words(sent["messages"]) == 14  # what the upstream counted: the rendered prompt


def test_the_request_overrides_defaults_and_the_template_supplies_the_model(mesh, fake_openai, owner):  # noqa: F811
    _, token = owner
    template = create(mesh, token)
    key = new_key(mesh, token, default_model="mesh/echo")["key"]
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    r = chat(
        mesh,
        key,
        {
            "template": template["name"],
            "variables": {"persona": "kind", "name": "Bo"},
            "temperature": 1.0,
            "max_tokens": 3,
            "tools": tools,
        },
    )
    assert r.status_code == 200, r.text
    sent = fake_openai.requests[-1]
    assert sent["tools"] == tools
    assert sent["model"] == "gpt-test"  # the template's model, not the key's default
    assert sent["temperature"] == 1.0 and sent["stop"] == ["END"] and sent["max_tokens"] == 3
    assert [m["content"] for m in sent["messages"]] == ["You are kind.", "My name is Bo."]  # no own messages

    plain = create(mesh, token, defaults={"temperature": 0.1})
    r = chat(mesh, key, {"template": plain["name"], "variables": {"persona": "x", "name": "y"}, "messages": []})
    assert r.status_code == 200 and r.json()["model"] == "mesh/echo"  # no model anywhere else: the key's default


def test_a_streamed_request_with_a_template_is_recorded_with_it(mesh, fake_openai, owner):  # noqa: F811
    account_id, token = owner
    template = create(mesh, token)
    key = new_key(mesh, token)["key"]
    with client(mesh, key).chat.completions.with_streaming_response.create(
        model=MODEL,
        messages=[],
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"template": f"{template['name']}@1", "variables": {"persona": "p", "name": "n"}},
    ) as raw:
        chunks = list(raw.parse())
        trace = raw.headers["x-mesh-trace-id"]
    assert chunks[-1].usage.prompt_tokens == count_words(fake_openai.requests[-1]["messages"]) == 7
    assert fake_openai.requests[-1]["stream"] is True and fake_openai.requests[-1]["stop"] == ["END"]
    usage = usage_event(mesh, account_id, trace)
    assert usage.stream and str(usage.template_id) == template["id"] and usage.template_version == 1


def test_the_budget_reservation_counts_the_rendered_prompt(mesh, fake_openai, owner):  # noqa: F811
    _, token = owner
    template = create(mesh, token)
    key = new_key(mesh, token, spend_cap_usd="1")["key"]
    small = chat(mesh, key, {"template": template["name"], "variables": {"persona": "p", "name": "n"}, "max_tokens": 5})
    assert small.status_code == 200, small.text
    before = len(fake_openai.requests)
    # 100,000 characters of prompt may be 100,000 tokens: up to $50 at $0.5 per 1K, beyond the $1 cap
    huge = chat(
        mesh, key, {"template": template["name"], "variables": {"persona": "p " * 50_000, "name": "n"}, "max_tokens": 5}
    )
    assert huge.status_code == 402 and huge.json()["error"]["code"] == "key_spend_cap", huge.text
    assert len(fake_openai.requests) == before


@pytest.mark.parametrize(
    "variables, code, named",
    [
        ({"persona": "p"}, "template_variable_missing", "name"),
        ({"persona": "p", "name": "n", "nmae": "typo"}, "template_variable_unknown", "nmae"),
        ({"persona": "p", "name": True}, "template_variable_invalid", "name"),
    ],
)
def test_wrong_variables_are_a_400_naming_the_variable(mesh, fake_openai, owner, variables, code, named):  # noqa: F811
    _, token = owner
    template = create(mesh, token)
    key = new_key(mesh, token)["key"]
    before = len(fake_openai.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client(mesh, key).chat.completions.create(
            model=MODEL, messages=[], extra_body={"template": template["name"], "variables": variables}
        )
    error = info.value.body
    assert info.value.status_code == 400 and error["code"] == code and f"'{named}'" in error["message"]
    assert error["param"] == f"variables.{named}"
    assert len(fake_openai.requests) == before  # nothing went upstream

    r = api(mesh, "POST", f"/api/templates/{template['id']}/render", token, json={"variables": variables})
    assert r.status_code == 400 and r.json()["error"]["code"] == code


def test_versions_are_immutable_and_labels_follow_their_version(mesh, fake_openai, owner):  # noqa: F811
    _, token = owner
    template = create(mesh, token)
    tid, name, key = template["id"], template["name"], new_key(mesh, token)["key"]
    variables = {"persona": "a poet", "name": "Cy"}

    def sent_system(reference: str) -> str:
        r = chat(mesh, key, {"template": reference, "variables": variables})
        assert r.status_code == 200, r.text
        return fake_openai.requests[-1]["messages"][0]["content"]

    assert sent_system(name) == "You are a poet."  # cached by the gateway from here on
    edited = api(
        mesh,
        "PUT",
        f"/api/templates/{tid}",
        token,
        json=template_body(
            name,
            messages=[
                {"role": "system", "content": "Act as {{persona}}."},
                {"role": "user", "content": "I am {{name}}."},
            ],
        ),
    )
    assert edited.status_code == 200 and edited.json()["version"] == 2
    assert sent_system(name) == "Act as a poet."  # the newest version, at once
    assert sent_system(f"{name}@1") == "You are a poet."
    assert sent_system(f"{name}@latest") == "Act as a poet."

    r = api(mesh, "PUT", f"/api/templates/{tid}/labels/production", token, json={"version": 1})
    assert r.status_code == 200 and r.json()["labels"] == {"production": 1}
    assert sent_system(f"{name}@production") == "You are a poet."
    api(mesh, "PUT", f"/api/templates/{tid}/labels/production", token, json={"version": 2})
    assert sent_system(f"{name}@production") == "Act as a poet."

    missing = chat(mesh, key, {"template": f"{name}@9", "variables": variables})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "template_version_not_found"
    assert "1 to 2" in missing.json()["error"]["message"]

    r = api(mesh, "GET", f"/api/templates/{tid}", token, params={"version": "1"})
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["latest_version"] == 2
    assert r.json()["messages"][0]["content"] == "You are {{persona}}."
    versions = api(mesh, "GET", f"/api/templates/{tid}/versions", token).json()["data"]
    assert [(v["version"], v["labels"]) for v in versions] == [(1, []), (2, ["production"])]
    rendered = api(
        mesh, "POST", f"/api/templates/{tid}/render", token, json={"variables": variables, "version": "production"}
    )
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["version"] == 2 and rendered.json()["messages"][0]["content"] == "Act as a poet."
    assert rendered.json()["params"] == {"model": MODEL, "temperature": 0.3, "stop": ["END"]}

    history = api(mesh, "GET", f"/api/templates/{tid}/events", token).json()
    assert [e["type"] for e in history] == [
        "template.created",
        "template.version_saved",
        "template.labeled",
        "template.labeled",
    ]
    assert {e["by"] for e in history} == {"account"}
    assert history[1]["details"]["changed"] == ["messages"] and history[1]["details"]["version"] == 2
    assert history[3]["details"] == {"label": "production", "version": 2, "previous_version": 1}

    assert api(mesh, "PUT", f"/api/templates/{tid}/labels/staging", token, json={"version": 1}).json()["labels"] == {
        "production": 2,
        "staging": 1,
    }
    r = api(mesh, "DELETE", f"/api/templates/{tid}/labels/staging", token)
    assert r.status_code == 200 and r.json()["labels"] == {"production": 2}
    gone = chat(mesh, key, {"template": f"{name}@staging", "variables": variables})
    assert gone.status_code == 404 and "production" in gone.json()["error"]["message"]
    for label, version, code in [("3", 1, "invalid_template"), ("ok", 7, "template_version_not_found")]:
        r = api(mesh, "PUT", f"/api/templates/{tid}/labels/{label}", token, json={"version": version})
        assert r.status_code in (400, 404) and r.json()["error"]["code"] == code, r.text


def test_names_are_unique_per_account_even_when_created_at_once(mesh, owner):  # noqa: F811
    _, token = owner
    name = f"race-{uuid.uuid4().hex[:6]}"
    with ThreadPoolExecutor(6) as pool:
        answers = list(
            pool.map(lambda _: api(mesh, "POST", "/api/templates", token, json=template_body(name)), range(6))
        )
    assert sorted(r.status_code for r in answers) == [201] + [409] * 5
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"template_name_taken"}
    listed = api(mesh, "GET", "/api/templates", token).json()["data"]
    assert [t["name"] for t in listed].count(name) == 1

    other = create(mesh, token)
    r = api(mesh, "PUT", f"/api/templates/{other['id']}", token, json=template_body(name))
    assert r.status_code == 409 and r.json()["error"]["code"] == "template_name_taken"


def test_archiving_hides_a_template_and_frees_its_name_but_keeps_its_history(mesh, owner):  # noqa: F811
    _, token = owner
    template = create(mesh, token)
    key = new_key(mesh, token)["key"]
    variables = {"persona": "p", "name": "n"}
    assert chat(mesh, key, {"template": template["name"], "variables": variables}).status_code == 200
    r = api(mesh, "DELETE", f"/api/templates/{template['id']}", token)
    assert r.status_code == 200 and r.json()["archived"] is True
    gone = chat(mesh, key, {"template": template["name"], "variables": variables})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "template_not_found"
    assert template["id"] not in [t["id"] for t in api(mesh, "GET", "/api/templates", token).json()["data"]]
    archived = api(mesh, "GET", "/api/templates", token, params={"archived": "true"}).json()["data"]
    assert template["id"] in [t["id"] for t in archived]
    assert api(mesh, "GET", f"/api/templates/{template['id']}", token).json()["archived"] is True
    r = api(mesh, "PUT", f"/api/templates/{template['id']}", token, json=template_body(template["name"]))
    assert r.status_code == 409 and r.json()["error"]["code"] == "template_archived"

    again = create(mesh, token, name=template["name"])
    assert again["id"] != template["id"] and again["version"] == 1
    assert (
        chat(mesh, key, {"template": template["name"], "variables": variables}).headers["x-mesh-template"]
        == f"{again['id']}@1"
    )


def test_another_account_cannot_see_or_use_a_template(mesh, owner):  # noqa: F811
    _, token = owner
    template = create(mesh, token)
    other_account, other_token = sign_up(mesh)
    api(
        mesh,
        "POST",
        f"/admin/accounts/{other_account}/credits",
        mesh.operator_token,
        json={"amount_usd": "1", "reason": "test"},
    )
    tid = template["id"]
    for method, path, body in [
        ("GET", f"/api/templates/{tid}", None),
        ("GET", f"/api/templates/{tid}/versions", None),
        ("GET", f"/api/templates/{tid}/events", None),
        ("PUT", f"/api/templates/{tid}", template_body("x")),
        ("PUT", f"/api/templates/{tid}/labels/prod", {"version": 1}),
        ("POST", f"/api/templates/{tid}/render", {"variables": {"persona": "p", "name": "n"}}),
        ("DELETE", f"/api/templates/{tid}", None),
    ]:
        r = api(mesh, method, path, other_token, json=body)
        assert r.status_code == 404, (method, path, r.text)
    assert api(mesh, "GET", "/api/templates", other_token).json()["data"] == []
    other_key = new_key(mesh, other_token)["key"]
    r = chat(mesh, other_key, {"template": template["name"], "variables": {"persona": "p", "name": "n"}})
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    assert create(mesh, other_token, name=template["name"])["id"] != tid  # names are unique per account only
    assert api(mesh, "GET", f"/api/templates/{tid}", token).json()["archived"] is False


@pytest.mark.parametrize(
    "change, code",
    [
        ({"name": "a@b"}, "invalid_template"),
        ({"name": "tab\there"}, "invalid_template"),
        ({"messages": []}, "invalid_template"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "invalid_template"),
        ({"messages": [{"role": "user", "content": "{{ user.name }}"}]}, "invalid_template"),
        ({"defaults": {"temperature": 3}}, "invalid_template"),
        ({"defaults": {"model": "nope/x"}}, "model_not_found"),
        ({"defaults": {"seed": 1}}, "invalid_request"),
        ({"extra": 1}, "invalid_request"),
    ],
)
def test_bad_templates_are_refused_with_a_reason(mesh, owner, change, code):  # noqa: F811
    _, token = owner
    r = api(mesh, "POST", "/api/templates", token, json={**template_body(f"bad-{uuid.uuid4().hex[:6]}"), **change})
    status = 404 if code == "model_not_found" else 400  # which models are enabled is state, as in /v1
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert api(mesh, "GET", "/api/templates", token).json()["data"] == []


def test_template_fields_are_checked_in_chat_requests(mesh, owner):  # noqa: F811
    _, token = owner
    key = new_key(mesh, token, default_model="mesh/echo")["key"]
    for body, param in [
        ({"template": 3, "messages": []}, "template"),
        ({"template": "x", "variables": ["a"], "messages": []}, "variables"),
        ({"variables": {"a": "1"}, "messages": [{"role": "user", "content": "hi"}]}, "variables"),
    ]:
        r = chat(mesh, key, body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    r = chat(mesh, key, {"template": "nothing-here", "messages": []})
    assert r.status_code == 404 and r.json()["error"]["code"] == "template_not_found"
    assert chat(mesh, key, {"messages": []}).status_code == 400  # without a template, messages are still needed


# 256,000 characters of {{a}} (the most a template may hold) with a 40 KB value would render to 2 GB.
REPEATED = [{"role": "user", "content": "{{a}}" * 20_000}] * 2 + [{"role": "user", "content": "{{a}}" * 11_200}]
HUGE_VALUE = "x" * 40_000
HUGE_SIZE = 51_200 * 40_000
RENDER_BOUND = 16 * 1024 * 1024  # MAX_RENDERED_CHARS, the /v1 body limit


def peak_memory(mesh) -> int:
    """The `mesh up` process's peak resident memory so far (bytes): the gateway, API and dashboard run in it."""
    status = open(f"/proc/{mesh.process.pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def too_large(error: dict) -> None:
    assert error["code"] == "template_too_large" and error["param"] == "variables", error
    assert str(HUGE_SIZE) in error["message"] and str(RENDER_BOUND) in error["message"], error


def test_a_render_that_would_be_gigabytes_is_refused_before_it_is_built(mesh, owner):  # noqa: F811
    """On the free mesh/echo, through the render route, and through the dashboard's Test: each a 400 giving
    the size and the bound, and the process's peak memory stays where it was (building it took 2 GB each)."""
    _, token = owner
    template = create(mesh, token, messages=REPEATED, defaults={"model": "mesh/echo"})
    key = new_key(mesh, token, default_model="mesh/echo")["key"]
    before = peak_memory(mesh)

    r = chat(mesh, key, {"template": template["name"], "variables": {"a": HUGE_VALUE}})
    assert r.status_code == 400, r.text
    too_large(r.json()["error"])

    r = api(mesh, "POST", f"/api/templates/{template['id']}/render", token, json={"variables": {"a": HUGE_VALUE}})
    assert r.status_code == 400, r.text
    too_large(r.json()["error"])

    with httpx.Client(base_url=mesh.url, cookies={"mesh_session": token}, timeout=30) as browser:
        editor = browser.get(f"/templates/{template['id']}")
        assert editor.status_code == 200, editor.text
        csrf = re.search(r'name="_csrf_token" value="([^"]+)"', editor.text).group(1)
        shown = browser.post(  # without JavaScript: the page the answer redirects to shows the result once
            f"/templates/{template['id']}/test",
            data={"_csrf_token": csrf, "var_a": HUGE_VALUE, "key": key},
            follow_redirects=True,
        )
        swapped = browser.post(  # what htmx sends: the result alone comes back
            f"/templates/{template['id']}/test",
            data={"_csrf_token": csrf, "var_a": HUGE_VALUE, "key": key},
            headers={"hx-request": "true"},
        )
    for answer in (shown, swapped):
        assert answer.status_code == 200, answer.text[-2000:]
        assert f"the rendered template would hold {HUGE_SIZE} characters; at most {RENDER_BOUND}" in answer.text

    assert peak_memory(mesh) - before < 100 * 1024 * 1024
    r = chat(mesh, key, {"template": template["name"], "variables": {"a": "y"}})  # 51,200 characters: within the bound
    assert r.status_code == 200, r.text
