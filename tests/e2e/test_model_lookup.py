"""GET /v1/models/{id} through `mesh up` with the official openai SDK: a model id holds a slash, and a model the
key may not use is as unknown to it as one that does not exist."""

from __future__ import annotations

import openai
import pytest

from tests import http_calls
from tests.e2e.conftest import funded_key

MODEL = "acme/gpt-test"


def test_one_model_is_found_by_its_id_with_its_slash(mesh):
    funded = funded_key(mesh, "1")
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    model = sdk.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "acme")
    assert model.id in [m.id for m in sdk.models.list()]
    with pytest.raises(openai.NotFoundError) as unknown:
        sdk.models.retrieve("acme/no-such-model")
    assert unknown.value.body["code"] == "model_not_found" and "GET /v1/models" in unknown.value.body["message"]
    raw = http_calls.get(f"{mesh.url}/v1/models/{MODEL}", headers={"authorization": f"Bearer {funded.key}"}, timeout=15)
    assert raw.status_code == 200 and raw.headers["x-mesh-trace-id"]
    assert http_calls.get(f"{mesh.url}/v1/models/{MODEL}", timeout=15).status_code == 401  # a key is needed
    posted = http_calls.post(
        f"{mesh.url}/v1/models/{MODEL}", headers={"authorization": f"Bearer {funded.key}"}, timeout=15
    )
    assert posted.status_code == 405 and posted.json()["error"]["code"] == "method_not_allowed"


def test_a_model_the_key_may_not_use_is_not_found(mesh):
    restricted = funded_key(mesh, "1", allowed_models=["mesh/echo"])
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=restricted.key, max_retries=0)
    assert sdk.models.retrieve("mesh/echo").id == "mesh/echo"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve(MODEL)


def test_a_bare_alias_reaches_its_model_and_is_billed_as_it(mesh):
    """mesh.toml `aliases`: a client that sends a bare name (litellm, llama-index, openai-agents) reaches the model;
    the request is billed and logged as that model, with the name it asked for."""
    import time

    from tests.e2e.conftest import OPENAI_NAMED_ALIAS, SHARED_ALIAS

    funded = funded_key(mesh, "1", allowed_models=[MODEL])  # the key names the id; the alias is the same model
    sdk = openai.OpenAI(base_url=mesh.url + "/v1", api_key=funded.key, max_retries=0)
    raw = sdk.chat.completions.with_raw_response.create(
        model=SHARED_ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=10
    )
    assert raw.parse().choices[0].message.content
    assert sdk.models.retrieve(SHARED_ALIAS).id == MODEL  # the Mesh id it resolves to
    auth = {"authorization": f"Bearer {funded.token}"}
    for _ in range(100):
        entry = http_calls.get(f"{mesh.url}/api/logs/{raw.headers['x-mesh-trace-id']}", headers=auth, timeout=15)
        if entry.status_code == 200:
            break
        time.sleep(0.1)
    logged = entry.json()
    assert (logged["model"], logged["requested_model"], logged["status"]) == (MODEL, SHARED_ALIAS, "success")
    models = http_calls.get(f"{mesh.url}/api/models", headers=auth, timeout=15).json()["data"]
    assert next(m for m in models if m["id"] == MODEL)["aliases"] == [SHARED_ALIAS, OPENAI_NAMED_ALIAS]
