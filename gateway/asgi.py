"""The ASGI messages the gateway reads and sends: the request's headers and body, and a whole response."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from gateway.errors import GatewayError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

MAX_BODY = 16 * 1024 * 1024


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")[:200]
    return None


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if len(body) > MAX_BODY:
        raise _too_large()
    if not message.get("more_body"):  # the usual request: one message
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _too_large()
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def _too_large() -> GatewayError:
    return GatewayError(
        413, f"request body is larger than {MAX_BODY // (1024 * 1024)} MiB", "invalid_request_error", "body_too_large"
    )


async def respond(send: Send, status: int, headers: list, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
