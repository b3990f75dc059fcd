"""Every error leaves the API as {"error": {"message", "type", "code"}} with a precise message."""

from __future__ import annotations

import logging
import re

import msgspec
import nats.errors
import psycopg
from eventsourcing.persistence import OperationalError as EventStoreUnavailable
from litestar import Request, Response
from litestar.exceptions import ClientException
from litestar.exceptions import HTTPException, NotAuthorizedException, NotFoundException, PermissionDeniedException
from litestar.exceptions import ValidationException, MethodNotAllowedException

from commands.accounts import BadCredentials, EmailTaken, InvalidInvite, InvalidPassword, WrongPassword
from commands.app import Conflict, NotFound
from domain.account import AccountSuspended, InvalidEmail, InvalidReason
from domain.autorefill import NoSavedCard
from domain.apikey import KeyRevoked
from domain.key_settings import InvalidKeySettings
from domain.catalog import InvalidModel, ModelTaken
from domain.bounds import FLOAT_AMOUNT_RULE, PATTERN_RULES, InvalidText
from domain.invite import SignupRefused
from domain.money import InvalidAmount, InvalidCreditGrant
from domain.quota import QuotaExceeded
from domain.ratelimit import RateLimited
from domain.rendering import InvalidTemplate, TemplateTooLarge, TemplateVariableInvalid, TemplateVariableMissing
from domain.rendering import TemplateVariableUnknown
from domain.template import TemplateArchived, TemplateNameTaken, TemplateNotFound
from domain.topup import TopUpError
from domain.webhook import InvalidWebhook, WebhookNotFound
from api.input_errors import InvalidInput, query_error
from api.payments import CardDeclined, PaymentError
from api.services.errors import Busy, Forbidden, Invalid, Missing, ServiceError, Unavailable, UpstreamFailed
from gateway.errors import ErrorBody, ErrorResponse

log = logging.getLogger("mesh.api")


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, code: str, type: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.type, self.param = status, message, code, type, param


# Domain and use-case errors, and the HTTP answer each one gets.
DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    InvalidEmail: (400, "invalid_email"),
    InvalidPassword: (400, "invalid_password"),
    InvalidAmount: (400, "invalid_amount"),
    InvalidReason: (400, "invalid_reason"),  # before InvalidCreditGrant: a kind of it
    InvalidCreditGrant: (400, "invalid_amount"),
    NoSavedCard: (409, "no_saved_card"),
    InvalidKeySettings: (400, "invalid_key_settings"),
    InvalidText: (400, "invalid_request"),
    KeyRevoked: (409, "key_revoked"),
    EmailTaken: (409, "email_taken"),
    InvalidInvite: (400, "invalid_request"),
    BadCredentials: (401, "bad_credentials"),
    WrongPassword: (403, "wrong_password"),
    AccountSuspended: (403, "account_suspended"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    TopUpError: (409, "topup_state"),
    InvalidWebhook: (400, "invalid_webhook"),
    InvalidModel: (400, "invalid_model"),
    ModelTaken: (409, "model_taken"),
    WebhookNotFound: (404, "not_found"),
    CardDeclined: (402, "card_declined"),
    PaymentError: (502, "payment_provider_error"),
    InvalidTemplate: (400, "invalid_template"),
    TemplateVariableMissing: (400, TemplateVariableMissing.code),
    TemplateVariableUnknown: (400, TemplateVariableUnknown.code),
    TemplateVariableInvalid: (400, TemplateVariableInvalid.code),
    TemplateTooLarge: (400, TemplateTooLarge.code),
    TemplateNameTaken: (409, "template_name_taken"),
    TemplateArchived: (409, "template_archived"),
    TemplateNotFound: (404, "template_version_not_found"),
    # the application services' refusals: each carries its own code (and param), answered as it is
    Invalid: (400, "invalid_request"),
    Missing: (404, "not_found"),
    Forbidden: (403, "forbidden"),
    Unavailable: (409, "unavailable"),
    Busy: (429, "busy"),
    UpstreamFailed: (502, "upstream_error"),
}
SERVICE_ERROR_TYPES: dict[type[ServiceError], str] = {
    Busy: "rate_limit_error",
    UpstreamFailed: "upstream_error",
    Forbidden: "permission_error",
}  # else invalid_request_error


NESTED_TOO_DEEPLY = "JSON nests too deeply"
# msgspec's words for a float where an amount (domain/bounds.py AmountIn) goes
FLOAT_AMOUNT = re.compile(r"Expected `float` that's a multiple of 1\.0()? - at `\$\.(\w*usd\w*)`")


class MeshRequest(Request):
    """Decodes JSON bodies as Litestar does, and answers 400 for a body nested so deeply that decoding it would
    exhaust the interpreter's recursion limit (msgspec raises RecursionError, which would otherwise be a 500)."""

    async def json(self):
        try:
            return await super().json()
        except RecursionError:
            raise ClientException(NESTED_TOO_DEEPLY) from None


def error_response(
    status: int,
    message: str,
    code: str | None,
    type: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
    param: str | None = None,
) -> Response:
    body = ErrorResponse(ErrorBody(message=message, type=type, code=code, param=param))
    return Response(
        content=msgspec.json.encode(body), status_code=status, media_type="application/json", headers=headers
    )


def handle_api_error(_: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.code, exc.type, param=exc.param)


def handle_domain_error(_: Request, exc: Exception) -> Response:
    for cls, (status, code) in DOMAIN_ERRORS.items():
        if isinstance(exc, cls):
            if isinstance(exc, ServiceError):
                kind = SERVICE_ERROR_TYPES.get(type(exc), "invalid_request_error")
                return error_response(status, exc.message, exc.code, kind, param=exc.param)
            return error_response(status, str(exc), code, param=getattr(exc, "param", None))
    raise exc


def handle_coded_refusal(_: Request, exc: SignupRefused | QuotaExceeded) -> Response:
    """A refusal whose code says which rule refused (signup_closed, key_quota_exceeded, ...)."""
    return error_response(403, str(exc), exc.code, "permission_error")


def handle_rate_limited(_: Request, exc: RateLimited) -> Response:
    return error_response(
        429, str(exc), "rate_limited", "rate_limit_error", headers={"retry-after": str(exc.retry_after)}
    )


def handle_invalid_input(_: Request, exc: InvalidInput) -> Response:
    return error_response(400, str(exc), exc.code, param=exc.param)


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        if (invalid := _invalid_parameter(request, exc)) is not None:
            return handle_invalid_input(request, invalid)
        return error_response(400, _validation_message(exc), "invalid_request")
    if isinstance(exc, NotFoundException):
        return error_response(
            404, exc.detail if exc.detail != "Not Found" else f"no route {request.url.path}", "not_found"
        )
    if isinstance(exc, MethodNotAllowedException):
        allow = (exc.headers or {}).get("allow", "")
        return error_response(
            405,
            f"{request.method} is not allowed on {request.url.path}; allowed: {allow}",
            "method_not_allowed",
            headers={"allow": allow},
        )
    if isinstance(exc, NotAuthorizedException):
        return error_response(401, exc.detail, "unauthorized")
    if isinstance(exc, PermissionDeniedException):
        return error_response(403, exc.detail, "forbidden")
    if exc.status_code == 400:
        return error_response(400, f"request body is not valid: {exc.detail}", "invalid_request")
    return error_response(exc.status_code, exc.detail, "http_error")


# A backing server that cannot be reached (it may be restarting: see api/supervisor.py) and what it holds.
UNAVAILABLE: dict[type[Exception], str] = {
    psycopg.OperationalError: "the read models (PostgreSQL)",  # PoolTimeout included
    EventStoreUnavailable: "the event log (NATS)",
    nats.errors.Error: "the event log (NATS)",
}
RETRY_AFTER_SECONDS = 2


def handle_unavailable(request: Request, exc: Exception) -> Response:
    what = next(name for cls, name in UNAVAILABLE.items() if isinstance(exc, cls))
    log.warning("%s %s: %s unreachable (%s)", request.method, request.url.path, what, type(exc).__name__)
    response = error_response(
        503,
        f"{what} cannot be reached right now; Mesh is reconnecting, retry shortly",
        "service_unavailable",
        "api_error",
    )
    response.headers["retry-after"] = str(RETRY_AFTER_SECONDS)
    return response


def handle_unexpected(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal error; it has been logged", "internal_error", "api_error")


def _invalid_parameter(request: Request, exc: ValidationException) -> InvalidInput | None:
    """A query or path value Litestar could not convert, in Mesh's words (api/input_errors.py)."""
    handler = request.route_handler
    items = [i for i in exc.extra or [] if isinstance(i, dict) and _source(i) in ("query", "path")]
    if not items or handler is None:
        return None
    item = items[0]
    key = item["key"]
    # the handler's parameters and its dependencies' (e.g. the log filters)
    for owner in (handler, *handler.resolve_dependencies().values()):
        signature, model = getattr(owner, "parsed_fn_signature", None), getattr(owner, "signature_model", None)
        if signature is None or model is None or key not in signature.parameters:
            continue
        fields = {f.name: f.type for f in msgspec.inspect.type_info(model).fields}
        if key in fields:
            break
    else:
        return None
    definition = signature.parameters[key].kwarg_definition
    name = getattr(definition, "name", None) or key
    where = _source(item)
    value = (request.path_params if where == "path" else request.query_params).get(name)
    shown = None if value is None else str(value)
    return query_error(name, item["message"], fields[key], shown, f"{where} parameter")


def _source(item: dict) -> str:
    return str(getattr(item.get("source"), "value", item.get("source")))


def _validation_message(exc: ValidationException) -> str:
    problems = []
    for item in exc.extra or []:
        if isinstance(item, dict):
            key = item.get("key")
            message = item.get("message", "")
            if key == "data" and message == "'data'":  # Litestar's word for a missing body
                message = "a JSON body is required"
            message = FLOAT_AMOUNT.sub(lambda m: f"{m.group(2)} is a float; {FLOAT_AMOUNT_RULE}", message)
            for pattern, rule in PATTERN_RULES.items():
                message = message.replace(
                    f"Expected `str` matching regex {pattern!r}", f"contains a character that is not allowed; {rule}"
                )
            problems.append(f"{key}: {message}" if key else message)
    detail = "; ".join(p for p in problems if p)
    if "JSON" in (exc.detail or "") or "decode" in (exc.detail or "").lower():
        return f"request body is not valid JSON: {detail or exc.detail}"
    return f"invalid request body: {detail}" if detail else exc.detail


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    InvalidInput: handle_invalid_input,
    RateLimited: handle_rate_limited,
    SignupRefused: handle_coded_refusal,
    QuotaExceeded: handle_coded_refusal,
    HTTPException: handle_http_exception,
    **{cls: handle_domain_error for cls in DOMAIN_ERRORS},
    **{cls: handle_unavailable for cls in UNAVAILABLE},
    Exception: handle_unexpected,
}
