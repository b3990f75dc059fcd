"""Who is asking, for the attempt limits of the JSON API and the dashboard alike."""

from __future__ import annotations

from litestar import Request


def client_address(request: Request) -> str:
    """The peer address, or behind a proxy in MESH_TRUSTED_PROXIES the client's it forwards (uvicorn's proxy
    headers set it in the scope: api/cli.py)."""
    return request.client.host if request.client else "unknown"
