"""What the OpenAPI document says beyond the handlers' signatures: who may call an operation, the errors it can
answer, and in what shape.

Every error Mesh answers is `{"error": {message, type, code, param}}` (gateway/errors.py), never Litestar's own
`{status_code, detail, extra}`. A handler declares the errors of its own logic with one argument,
`responses=errors(404, 409)`; a controller declares who may call it with `security = ACCOUNT` or `OPERATOR`.
`finish_openapi` then completes every operation from those declarations: the errors its authentication answers
(401, 403, and 503 when checking a management token needs PostgreSQL), the 400 of a body or query that does not
parse, and the error shape on every error response, so no error status can be left out or in the wrong shape.
"""

from __future__ import annotations

from typing import Any, Iterable

import msgspec
from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType as MediaType,
    OpenAPIHeader,
    OpenAPIResponse,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType

from domain.bounds import TIME_PATTERN
from gateway.errors import ErrorResponse

ERROR_SCHEMA = "ErrorResponse"  # the component every error response refers to
ACCOUNT_SCHEME, OPERATOR_SCHEME = "account", "operator"
ACCOUNT: list[dict[str, list[str]]] = [{ACCOUNT_SCHEME: []}]  # a controller's `security`
OPERATOR: list[dict[str, list[str]]] = [{OPERATOR_SCHEME: []}]

SECURITY_SCHEMES: dict[str, SecurityScheme | Reference] = {
    ACCOUNT_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The account's management token (`mt-…`), from POST /api/signup or /api/login",
    ),
    OPERATOR_SCHEME: SecurityScheme(
        type="http",
        scheme="bearer",
        description="The operator token (MESH_OPERATOR_TOKEN or <data dir>/operator_token), or the management token "
        "of an account given the operator role (`mesh operators add <email>`)",
    ),
}

# What each error status means in this API; the body's message says exactly what was wrong and what is allowed.
ERROR_DESCRIPTIONS = {
    400: "The request is not valid: a body, query or path value breaks a rule (the message names it)",
    401: "No credentials, or a management token that is unknown, expired or revoked",
    402: "The account's balance or a key's spend cap does not cover the request",
    403: "Credentials of the wrong kind for this route (an API key, or not an operator's), or an account suspended",
    404: "No such thing for this caller",
    409: "The request conflicts with the current state (e.g. already taken, revoked or archived)",
    413: "The request is larger than allowed",
    429: "Too many requests; retry after the time in Retry-After",
    502: "An upstream (the payment provider, a model provider) refused or could not be reached",
    503: "A backing server (PostgreSQL or NATS) cannot be reached right now; retry after Retry-After",
}
RETRY_AFTER = OpenAPIHeader(
    description="Seconds to wait before trying again", required=False, schema=Schema(type=OpenAPIType.INTEGER)
)
# Errors every operation that checks a credential can answer.
AUTH_ERRORS = {ACCOUNT_SCHEME: (401, 403, 503), OPERATOR_SCHEME: (401, 403)}


def errors(*statuses: int) -> dict[int, ResponseSpec]:
    """A handler's `responses=`: the error statuses its own logic answers, each in Mesh's error shape."""
    return {
        status: ResponseSpec(
            data_container=ErrorResponse, description=ERROR_DESCRIPTIONS[status], generate_examples=False
        )
        for status in statuses
    }


CONTENT_OPT = "openapi_content"  # the `opt` key `content` fills


def content(media_types: Iterable[str], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A handler's `opt=` when its success answer is not JSON (a streamed export): the media types it may send,
    each a text body, and the headers it sets (name: description)."""
    return {CONTENT_OPT: (sorted({m.split(";")[0] for m in media_types}), headers or {})}


def security_components() -> Components:
    return Components(security_schemes=SECURITY_SCHEMES)


FINISHED = "openapi_finished"  # app.state: the document is complete


def openapi_document(app: Litestar) -> dict[str, Any]:
    """The app's OpenAPI document, completed (`finish_openapi`) the first time it is asked for, not at start: it is
    half of what building the app costs, and most Meshes never serve it. The app's `before_request` asks for it
    ahead of the docs routes, which serve what Litestar keeps."""
    if not app.state.get(FINISHED):
        finish_openapi(app)
        app.state[FINISHED] = True
    document: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return document


def finish_openapi(app: Litestar) -> None:
    """Complete the app's OpenAPI document (built once, here, before anything serves it): see the module doc."""
    plugin = app.plugins.get(OpenAPIPlugin)
    openapi = plugin.provide_openapi()
    schemas = openapi.components.schemas
    for path_item in (openapi.paths or {}).values():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(path_item, method)
            if operation is None:
                continue
            responses = operation.responses if operation.responses is not None else {}
            for requirement in operation.security or []:
                for scheme in requirement:
                    for status in AUTH_ERRORS[scheme]:
                        responses.setdefault(str(status), _error_response(status))
            for status, response in list(responses.items()):
                if int(status) >= 400 and isinstance(response, OpenAPIResponse) and _is_litestar_error(response):
                    responses[status] = _error_response(int(status))  # Litestar's own shape, never what Mesh sends
                if int(status) in (429, 503) and isinstance(response, OpenAPIResponse):
                    response.headers = {**(response.headers or {}), "Retry-After": RETRY_AFTER}
            operation.responses = responses
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            data = handler.parsed_fn_signature.parameters.get("data")
            if data is not None and data.has_default:  # a body the handler can do without (Litestar says required)
                for method in handler.http_methods:
                    body = getattr(openapi.paths[route.path_format], method.lower()).request_body
                    if body is not None:
                        body.required = False
            if CONTENT_OPT not in handler.opt:
                continue
            media_types, headers = handler.opt[CONTENT_OPT]
            for method in handler.http_methods:
                operation = getattr(openapi.paths[route.path_format], method.lower())
                success = operation.responses[str(handler.status_code)]
                success.content = {m: MediaType(schema=Schema(type=OpenAPIType.STRING)) for m in media_types}
                success.headers = {
                    name: OpenAPIHeader(description=what, required=False, schema=Schema(type=OpenAPIType.STRING))
                    for name, what in headers.items()
                }
    if ERROR_SCHEMA not in schemas:  # no handler declared an error itself: register the shape
        raise RuntimeError("no route declares errors(...); the ErrorResponse component is missing")
    document = openapi.to_schema()
    # A request body is read by msgspec (strictly: api/strict_input.py), so msgspec states it: every constraint,
    # also inside unions (Litestar's generator drops those of `str | int` members), and no unknown fields.
    bodies = [s for s in _structs(msgspec.Struct) if s.__struct_config__.forbid_unknown_fields]
    _, components = msgspec.json.schema_components(bodies, ref_template="#/components/schemas/{name}")
    document["components"]["schemas"].update(components)
    _pattern_times(document)
    plugin._openapi_schema = document  # what /schema/openapi.json serves


def _pattern_times(node: Any) -> None:
    """Every time a client sends is checked by domain.bounds.check_aware: its year, stated as TIME_PATTERN."""
    if isinstance(node, dict):
        if node.get("format") == "date-time":
            node["pattern"] = TIME_PATTERN
        for value in node.values():
            _pattern_times(value)
    elif isinstance(node, list):
        for value in node:
            _pattern_times(value)


def _structs(base: type) -> list[type]:
    found = []
    for sub in base.__subclasses__():
        found += [sub, *_structs(sub)]
    return found


def _error_response(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=ERROR_DESCRIPTIONS.get(status, "An error"),
        content={"application/json": MediaType(schema=Reference(f"#/components/schemas/{ERROR_SCHEMA}"))},
    )


def _is_litestar_error(response: OpenAPIResponse) -> bool:
    for media in (response.content or {}).values():
        schema: Any = media.schema
        candidates = [schema, *(getattr(schema, "one_of", None) or [])]
        if any(isinstance(s, Schema) and s.properties and "status_code" in s.properties for s in candidates):
            return True
    return False
