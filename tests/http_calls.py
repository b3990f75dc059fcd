"""httpx's one-call functions (`get`, `post`, ... `stream`) for the tests, without their cost per call.

Each of httpx's own builds a client, and each new client loads the CA bundle into a new SSL context: about 20 ms
of CPU per call, even to a plain http:// address on loopback. The suite makes such calls by the thousand (each
/health poll while a `mesh up` starts, each look while waiting for a read model). These are the same functions
with one SSL context shared; every call still gets a client of its own, so no cookie or connection is kept from
one call to the next, as with httpx's."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import Any

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
