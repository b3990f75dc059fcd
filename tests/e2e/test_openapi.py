"""The OpenAPI document a running Mesh serves tells the truth about its shape: every error answer is the
ErrorResponse component, who may call what is a security scheme, and the methods each path answers are the ones
OPTIONS lists and a 405 names (in Mesh's error shape, with Allow)."""

from __future__ import annotations

import uuid


from tests import http_calls
from tests.e2e.test_walking_skeleton import api

METHODS = ("get", "put", "post", "delete", "patch")
ERROR_REF = "#/components/schemas/ErrorResponse"
# The one error status whose body is not an error: /health answers 503 with its report (for load balancers)
REPORTS = {("get", "/health", "503"): "#/components/schemas/HealthOut"}


def document(mesh) -> dict:
    r = http_calls.get(mesh.url + "/schema/openapi.json", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def concrete(path: str, operations: dict) -> str:
    """The path with a value for each path parameter: a UUID where the document says uuid, else a word."""
    for operation in operations.values():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                value = str(uuid.uuid4()) if parameter["schema"].get("format") == "uuid" else "x"
                path = path.replace("{" + parameter["name"] + "}", value)
    return path


def test_every_error_answer_in_the_document_is_the_error_component(mesh):
    doc = document(mesh)
    error = doc["components"]["schemas"]["ErrorResponse"]
    body = doc["components"]["schemas"][error["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
    assert set(body["properties"]) == {"message", "type", "code", "param"}
    assert {"message", "type"} <= set(body["required"])
    schemes = doc["components"]["securitySchemes"]
    assert {name: (s["type"], s["scheme"]) for name, s in schemes.items()} == {
        "account": ("http", "bearer"),
        "operator": ("http", "bearer"),
    }
    errors = 0
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            label = f"{method.upper()} {path}"
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    errors += 1
                    expected = REPORTS.get((method, path, status), ERROR_REF)
                    assert response["content"]["application/json"]["schema"] == {"$ref": expected}, label
                    if int(status) in (429, 503):
                        assert "Retry-After" in response.get("headers", {}), label
            security = [name for requirement in operation.get("security", []) for name in requirement]
            if path.startswith("/admin/"):
                assert security == ["operator"], label
            if security:  # a credential checked is a 401 and a 403 the operation declares
                assert {"401", "403"} <= set(operation["responses"]), label
    assert errors > 100


def test_options_and_405_name_the_methods_the_document_states(mesh):
    doc = document(mesh)
    token = api(
        mesh,
        "POST",
        "/api/signup",
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"},
    ).json()["management_token"]
    checked = 0
    for path, item in doc["paths"].items():
        declared = {m.upper() for m in METHODS if m in item} | {"OPTIONS"}
        url = concrete(path, {m: item[m] for m in METHODS if m in item})
        options = http_calls.request("OPTIONS", mesh.url + url, timeout=30)
        assert options.status_code == 204, (path, options.text)
        allow = {m.strip() for m in options.headers["allow"].split(",")}
        assert allow == declared, (path, allow, declared)
        missing = next((m.upper() for m in METHODS if m not in item), None)
        if missing is None:
            continue
        refused = http_calls.request(missing, mesh.url + url, headers={"authorization": f"Bearer {token}"}, timeout=30)
        assert refused.status_code == 405, (missing, path, refused.text)
        assert {m.strip() for m in refused.headers["allow"].split(",")} == declared, (path, refused.headers)
        error = refused.json()["error"]
        assert set(error) == {"message", "type", "code", "param"} and error["code"] == "method_not_allowed"
        assert missing in error["message"] and all(m in error["message"] for m in declared), error
        checked += 1
    assert checked >= 20
