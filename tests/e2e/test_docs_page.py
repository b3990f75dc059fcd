"""The API docs page in Chromium: Swagger UI, served by Mesh, draws every operation of the OpenAPI document it
serves (an OpenAPI 3.1 document, which Swagger UI 4 refused as "Unable to render this definition")."""

from __future__ import annotations


from tests import http_calls
from tests.e2e.test_dashboard import browser  # noqa: F401  (a fixture)


def test_the_docs_page_draws_every_operation_of_the_document(browser, mesh):  # noqa: F811
    document = http_calls.get(mesh.url + "/schema/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    operations = sum(
        1
        for item in document["paths"].values()
        for method in item
        if method in ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    )
    context = browser.new_context()
    try:
        tab = context.new_page()
        failed: list[str] = []
        tab.on("requestfailed", lambda r: failed.append(r.url))
        tab.goto(mesh.url + "/schema")
        tab.wait_for_selector(".opblock", timeout=20_000)
        assert "Unable to render" not in tab.content()
        assert tab.locator(".opblock").count() == operations
        assert tab.locator(".title").first.inner_text().startswith("Mesh")
        assert failed == []
    finally:
        context.close()


def test_docs_assets_are_the_page_s_files_only(mesh):
    """The wheel's folder also holds Swagger Editor and source maps: not Mesh's to serve."""
    assert http_calls.get(mesh.url + "/schema/assets/swagger-ui-bundle.js").status_code == 200
    for name in ("swagger-editor-bundle.js", "swagger-ui-bundle.js.map", "../__init__.py", "LICENSE"):
        assert http_calls.get(mesh.url + "/schema/assets/" + name).status_code == 404, name
