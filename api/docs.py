"""The OpenAPI document and its docs page, titled "Mesh" with the package version.

The page is Swagger UI from the `swagger-ui-bundle` wheel (Apache-2.0, its license ships in the wheel), served by
Mesh itself: it works offline and loads nothing from a CDN."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from api.openapi import security_components

DOCS_PATH = "/schema"  # the page; the document is at /schema/openapi.json
ASSETS_PATH = "/schema/assets"


def package_version() -> str:
    try:
        return version("mesh-gateway")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def openapi_config() -> OpenAPIConfig:
    swagger = SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/favicon-32x32.png'>",
        path="/",
    )
    return OpenAPIConfig(
        title="Mesh",
        version=package_version(),
        path=DOCS_PATH,
        render_plugins=[swagger],
        components=security_components(),
    )


docs_assets = create_static_files_router(
    path=ASSETS_PATH, directories=[swagger_ui_path], include_in_schema=False, name="docs-assets"
)
