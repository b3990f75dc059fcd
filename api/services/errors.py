"""What a use case refuses with, in application terms: api/errors.py alone turns each kind into an HTTP answer
(status, and the OpenAI-style body with this message, code and param)."""

from __future__ import annotations


class ServiceError(Exception):
    """A refusal: `code` names the rule (the API's error code), `param` the input at fault (if one is)."""

    def __init__(self, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.message, self.code, self.param = message, code, param


class Invalid(ServiceError):
    """The input breaks a rule; nothing changed."""


class Missing(ServiceError):
    """What was asked for does not exist (or is not the caller's)."""


class Forbidden(ServiceError):
    """The caller may not do this (not an operator, say)."""


class Unavailable(ServiceError):
    """The server does not offer this now (not configured, or the account is at a limit)."""


class Busy(ServiceError):
    """Too much of this is running already; the same call later may succeed."""


class UpstreamFailed(ServiceError):
    """A provider Mesh asked on the caller's behalf failed or refused (the message names it, never its key)."""
