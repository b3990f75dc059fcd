"""The OpenAPI document and its docs page, titled "Mesh" with the package version.

The page is Swagger UI 5 from the `swagger-ui-py` wheel (Apache-2.0, its license ships in the wheel), served by
Mesh itself: it works offline and loads nothing from a CDN. Swagger UI 4 cannot show an OpenAPI 3.1 document,
which is what Litestar writes ("Unable to render this definition")."""

from __future__ import annotations

import importlib.util
import mimetypes
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from litestar import get
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.response import File

from api.openapi import security_components

DOCS_PATH = "/schema"  # the page; the document is at /schema/openapi.json
ASSETS_PATH = "/schema/assets"
# the files the page loads, from the wheel's static folder (which also holds Swagger Editor: not served)
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js", "favicon-32x32.png")


def swagger_ui_static() -> Path:
    """The wheel's static folder, found without importing the package (its __init__ loads web-framework glue)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Swagger UI's files not found; install the 'swagger-ui-py' package")
    return Path(list(spec.submodule_search_locations)[0]) / "static"


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


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, cache_control=CacheControlHeader(max_age=86400))
async def docs_asset(name: FromPath[str]) -> File:
    """A file the page loads; the rest of the wheel's folder (Swagger Editor, source maps) is not served."""
    if name not in ASSETS:
        raise NotFoundException(f"no docs asset {name!r}")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"  # nosniff: the type must be right
    return File(swagger_ui_static() / name, media_type=media_type, content_disposition_type="inline")
