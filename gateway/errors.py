"""Errors in the OpenAI shape: {"error": {"message", "type", "code"}}."""

from __future__ import annotations

import msgspec


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class GatewayError(Exception):
    """A request the gateway refuses or cannot serve; becomes an OpenAI-style error response."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or []  # extra response headers, such as Retry-After
        self.billed = False  # the request reached a model and has its usage event: not a refusal
        # an upstream failure worth trying again (a 429, a 5xx, no connection, no answer in time: gateway/fallbacks.py)
        self.retryable = False
        self.retry_after: float | None = None  # seconds, as the upstream's Retry-After asked

    def body(self) -> bytes:
        return msgspec.json.encode(ErrorResponse(ErrorBody(self.message, self.type, self.code, self.param)))


def invalid(message: str, code: str = "invalid_request", param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", code, param)
