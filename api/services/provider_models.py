"""The operator's view of what a provider offers (gateway/discovery.py), for the admin route and
`mesh models discover`."""

from __future__ import annotations

from typing import Any

from api.services.errors import Invalid, Missing, UpstreamFailed
from gateway.catalog import Catalog
from gateway.discovery import NotListable, Offer, discover
from gateway.errors import GatewayError


class ProviderModelService:
    def __init__(self, catalog: Catalog, adapters: dict[str, Any]):
        self.catalog = catalog
        self.adapters = adapters  # by provider name: each one's upstream client is the one asked

    async def offered(self, name: str) -> Offer:
        provider = self.catalog.providers.get(name)
        if provider is None:
            known = ", ".join(sorted(p for p in self.catalog.providers if p != "mesh")) or "none"
            raise Missing(f"no provider {name[:100]!r} in mesh.toml; its providers: {known}", "not_found", "name")
        upstream = getattr(self.adapters.get(name), "upstream", None)
        try:
            if upstream is None:
                raise NotListable(f"provider {name!r} is of kind {provider.kind!r}, which has no model list")
            return await discover(provider, upstream, self.catalog)
        except NotListable as exc:
            raise Invalid(str(exc), "not_listable", "name") from None
        except GatewayError as exc:
            raise UpstreamFailed(f"listing the models of {exc.message}", exc.code or "upstream_error") from None
