"""httpx's one-call functions (`get`, `post`, ... `stream`) for the tests, without their cost per call, and
`share_tls` for every other client the tests build.

Each of httpx's own builds a client, and each new client loads the CA bundle into a new SSL context: about 20 ms
of CPU per call, even to a plain http:// address on loopback. The suite makes such calls by the thousand (each
/health poll while a `mesh up` starts, each look while waiting for a read model). These are the same functions
with one SSL context shared; every call still gets a client of its own, so no cookie or connection is kept from
one call to the next, as with httpx's."""

from __future__ import annotations

import functools
import ssl
from contextlib import AbstractContextManager
from typing import Any, Callable

import httpx

TLS = httpx.create_ssl_context()  # what httpx builds for every call: the certifi CA bundle, verification on


def request(method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=TLS, **kwargs)


def stream(method: str, url: httpx.URL | str, **kwargs: Any) -> AbstractContextManager[httpx.Response]:
    return httpx.stream(method, url, verify=TLS, **kwargs)


get = functools.partial(request, "GET")
post = functools.partial(request, "POST")
put = functools.partial(request, "PUT")
patch = functools.partial(request, "PATCH")
delete = functools.partial(request, "DELETE")


def share_tls() -> None:
    """Let every httpx and httpx2 client that verifies by default share one SSL context per library: the clients of
    the openai and anthropic SDKs (httpx2), which the tests make by the hundred, and the tests' own. The context is
    what each would have built (`create_ssl_context`), and a client given a context or other settings of its own
    still builds it."""
    import httpx._transports.default as httpx_transports
    import httpx2._transports.default as httpx2_transports

    httpx_transports.create_ssl_context = _shared(httpx_transports.create_ssl_context, TLS)
    httpx2_transports.create_ssl_context = _shared(
        httpx2_transports.create_ssl_context, httpx2_transports.create_ssl_context()
    )


def _shared(create: Callable[..., ssl.SSLContext], default: ssl.SSLContext) -> Callable[..., ssl.SSLContext]:
    @functools.wraps(create)
    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is True and cert is None and trust_env:
            return default
        return create(verify=verify, cert=cert, trust_env=trust_env)

    return create_ssl_context
