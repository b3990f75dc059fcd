"""schemathesis against the OpenAPI document a running Mesh serves: every operation, with auth (a management token
on /api, the operator token on /admin), positive and negative (schema-violating) input; no 5xx, and every
4xx in the error shape. Bounded: a few examples per operation, derandomized, so the run stays short."""

from __future__ import annotations

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable

from tests.e2e.test_walking_skeleton import api, sign_up

# Routes that end the caller's session (logout; a password change revokes every token): they get a session of
# their own, so the other operations keep a valid token.
SESSION_ENDING = {"/api/logout", "/api/password"}
EXAMPLES = 12  # per operation and mode; the whole run takes well under two minutes
ERROR_FIELDS = {"message", "type", "code", "param"}


def check(response: httpx.Response, label: str) -> None:
    assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert set(error) == ERROR_FIELDS and error["message"], f"{label}: {response.text[:500]}"


def test_every_operation_survives_fuzzing(mesh):
    account_id, token = sign_up(mesh)
    api(
        mesh,
        "POST",
        f"/admin/accounts/{account_id}/credits",
        mesh.operator_token,
        json={"amount_usd": "5", "reason": "fuzz"},
    )
    _, own_session = sign_up(mesh)
    schema = schemathesis.openapi.from_url(mesh.url + "/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    client = httpx.Client(base_url=mesh.url, timeout=30)
    tried = 0
    for operation in operations:
        bearer = mesh.operator_token if operation.path.startswith("/admin") else token
        if operation.path in SESSION_ENDING:
            bearer = own_session
        if operation.path == "/api/billing/stripe/webhook":
            bearer = None  # Stripe signs its calls; without a signature every call must be a clean 4xx
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case) -> None:
                nonlocal tried
                kwargs = case.as_transport_kwargs(base_url=mesh.url)
                headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
                if bearer:
                    headers["authorization"] = f"Bearer {bearer}"
                request = {
                    k: v
                    for k, v in kwargs.items()
                    if k in ("method", "url", "params", "json", "data", "content", "cookies")
                }
                if "data" in request and isinstance(request["data"], (bytes, str)):
                    request["content"] = request.pop("data")
                response = client.request(headers=headers, **request)
                tried += 1
                check(response, f"{case.method} {case.formatted_path} ({mode.value})")

            try:
                run()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing in this operation to get wrong
    client.close()
    print(f"\n{tried} requests over {len(operations)} operations")
    assert tried >= len(operations) * EXAMPLES
    assert api(mesh, "GET", "/api/keys", token).status_code == 200  # the fuzzed operations ran with a live session
