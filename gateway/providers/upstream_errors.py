"""What an upstream failure becomes, the same for every provider: the status a client can act on and a message that
names the provider.

The text of its 429s and 5xx is about the operator's account with it (its organisation, quotas, incidents): it goes
to the server log, and the client gets Mesh's own message; a request it refuses (another 4xx, such as a prompt too
long for the context) is the client's to fix, so its text is passed on."""

from __future__ import annotations

import logging
import socket
import ssl

import msgspec

from gateway.catalog import Provider
from gateway.errors import GatewayError
from gateway.transport import UpstreamUnreachable

log = logging.getLogger("mesh.gateway")

# The provider refused Mesh's own credentials for it: the operator's problem, never the client's, and its text
# (which may quote part of the key) stays in the server log.
UPSTREAM_AUTH_STATUSES = (401, 403)


def upstream_error(
    provider: Provider, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> GatewayError:
    """The error a failed upstream call becomes; a 429 or 5xx is `retryable`, with the upstream's Retry-After."""
    if status == 429 or status >= 500:
        error = _upstream_failure(provider, status, message)
        error.retryable = True
        error.retry_after = retry_after(headers or [])
        return error
    if status in UPSTREAM_AUTH_STATUSES:
        log.error("provider %s refused Mesh's credentials with HTTP %d; check its API key", provider.name, status)
        return GatewayError(
            502,
            f"provider {provider.name} refused Mesh's credentials for it (HTTP {status}); "
            "the operator must check the provider's API key",
            "upstream_error",
            "upstream_auth_failed",
        )
    return GatewayError(
        status, f"provider {provider.name} refused the request: {message}", "invalid_request_error", "upstream_rejected"
    )


def _upstream_failure(provider: Provider, status: int, message: str) -> GatewayError:
    if status == 429:
        log.warning("provider %s is rate limiting (HTTP 429): %s", provider.name, message)
        return GatewayError(
            429,
            f"the upstream provider ({provider.name}) is rate limiting; retry later",
            "rate_limit_error",
            "upstream_rate_limited",
        )
    if status >= 500:
        log.warning("provider %s failed with HTTP %d: %s", provider.name, status, message)
        return GatewayError(
            502, f"the upstream provider ({provider.name}) failed (HTTP {status})", "upstream_error", "upstream_error"
        )
    raise AssertionError(status)


def retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    """The seconds an upstream's `Retry-After` (or `retry-after-ms`) header asks for; None without one, or with
    an HTTP date (Mesh waits briefly anyway: gateway/fallbacks.py caps it)."""
    for name, value in headers:
        lower = name.lower()
        try:
            if lower == b"retry-after-ms":
                return max(float(value) / 1000, 0.0)
            if lower == b"retry-after":
                return max(float(value), 0.0)
        except ValueError:
            return None
    return None


def failed_mid_stream(provider: Provider, message: str) -> GatewayError:
    """An error event inside a stream that had begun (an overloaded or failing upstream): its text to the log."""
    log.warning("provider %s failed mid-stream: %s", provider.name, message)
    return GatewayError(
        502, f"the upstream provider ({provider.name}) failed mid-stream", "upstream_error", "upstream_error"
    )


def upstream_timeout(provider: Provider) -> GatewayError:
    error = GatewayError(
        504,
        f"provider {provider.name} did not answer within {provider.timeout:g}s",
        "upstream_error",
        "upstream_timeout",
    )
    error.retryable = True
    return error


def upstream_unreachable(provider: Provider, exc: Exception) -> GatewayError:
    """The connection failed: the client learns which provider and how; its address (internal, often) goes to the
    server log only."""
    log.warning("provider %s unreachable: %s", provider.name, exc)
    error = GatewayError(
        502, f"provider {provider.name} is unreachable: {_how(exc)}", "upstream_error", "upstream_unreachable"
    )
    error.retryable = True
    return error


def _how(exc: Exception) -> str:
    cause = exc.__context__  # the OSError behind UpstreamUnreachable
    if isinstance(cause, ConnectionRefusedError):
        return "the connection was refused"
    if isinstance(cause, socket.gaierror):
        return "its host name does not resolve"
    if isinstance(cause, ssl.SSLError):
        return "the TLS handshake failed"
    if isinstance(exc, UpstreamUnreachable):
        return "no connection could be made"
    return "the connection broke before the answer was complete"


def error_field(content: bytes) -> str:
    """The message of an `{"error": {"message": ...}}` body (OpenAI, Anthropic and Google all use it)."""
    try:
        document = msgspec.json.decode(content)
        error = document.get("error") if isinstance(document, dict) else None
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
    except msgspec.DecodeError:
        pass
    return content[:200].decode(errors="replace") or "no details"
