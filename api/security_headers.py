"""The headers every Litestar answer (pages, /api, /admin, /health, /schema, static files) carries, in one place.

No page may be framed by another site (`X-Frame-Options` and CSP `frame-ancestors`: a one-button revoke page
must not be clickjacked), no answer is content-sniffed, and no page's address leaves for another site in a
Referer. Over https (the client's scheme: behind a trusted proxy, its X-Forwarded-Proto) every answer carries
HSTS and every cookie is Secure, the CSRF cookie Litestar sets included. The CSP restricts only what needs no
allowance from the pages (framing, plugins, <base>), so the dashboard, stripe.js and the Swagger UI at /schema
load as before. Answers that show a secret say `Cache-Control: no-store` on their handler (`NO_STORE`).
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from litestar.datastructures import CacheControlHeader

HSTS_SECONDS = 365 * 24 * 3600
CONTENT_SECURITY_POLICY = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
HTTPS_HEADERS = ((b"strict-transport-security", f"max-age={HSTS_SECONDS}".encode()),)
NO_STORE = CacheControlHeader(no_store=True)  # for handlers whose answer shows a secret (a key, a token)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def with_security_headers(scope: dict[str, Any], send: Send) -> Send:
    """`send`, adding the security headers to the response's start (and, over https, HSTS and Secure cookies)."""
    https = scope.get("scheme") == "https"

    async def send_secured(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", ())}
            headers = [_secure_cookie(h) if https else h for h in message.get("headers", ())]
            added = SECURITY_HEADERS + HTTPS_HEADERS if https else SECURITY_HEADERS
            headers += [h for h in added if h[0] not in present]
            message = {**message, "headers": headers}
        await send(message)

    return send_secured


def _secure_cookie(header: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    name, value = header
    if name.lower() != b"set-cookie" or any(p.strip().lower() == b"secure" for p in value.split(b";")):
        return header
    return name, value + b"; Secure"
