"""Model discovery's bounds and reading (gateway/discovery.py), on an upstream that pages forever or answers
badly; the three wire formats against fake providers through `mesh up` are tests/e2e/test_model_discovery.py."""

import asyncio

import msgspec
import pytest

from domain.pricing import Price
from gateway.catalog import Catalog, Model, Provider
from gateway.discovery import MAX_MODELS, MAX_PAGES, NotListable, discover
from gateway.errors import GatewayError


class EndlessPages:
    """An upstream whose model list never ends: every page says there is another."""

    def __init__(self, kind: str, per_page: int = 3):
        self.kind, self.per_page, self.asked = kind, per_page, []

    async def get(self, path, params=None):
        self.asked.append((path, dict(params or {})))
        n = len(self.asked)
        ids = [f"m{n}-{i}" for i in range(self.per_page)]
        if self.kind == "anthropic":
            return msgspec.json.encode({"data": [{"id": i} for i in ids], "has_more": True, "last_id": ids[-1]})
        return msgspec.json.encode({"models": [{"name": f"models/{i}"} for i in ids], "nextPageToken": str(n)})

    def broken(self, what):
        return GatewayError(502, f"provider p {what}", "upstream_error", "bad_upstream_response")


def catalog(kind: str) -> Catalog:
    return Catalog([Provider("p", kind, "http://unused")], [Model("p/one", "p", "m1-0", Price(0, 0), enabled=False)])


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
def test_paging_stops_at_max_pages_and_says_the_list_was_cut(kind):
    upstream = EndlessPages(kind)
    offer = asyncio.run(discover(catalog(kind).providers["p"], upstream, catalog(kind)))
    assert len(upstream.asked) == MAX_PAGES and offer.truncated
    assert len(offer.models) == 3 * MAX_PAGES
    cursor = "after_id" if kind == "anthropic" else "pageToken"
    assert cursor not in upstream.asked[0][1] and cursor in upstream.asked[1][1]
    marked = next(m for m in offer.models if m.id == "m1-0")
    assert (marked.mesh_ids, marked.enabled) == (["p/one"], False)


def test_at_most_max_models_are_listed():
    upstream = EndlessPages("gemini", per_page=400)
    offer = asyncio.run(discover(catalog("gemini").providers["p"], upstream, catalog("gemini")))
    assert len(offer.models) == MAX_MODELS and offer.truncated and len(upstream.asked) == 3


def test_a_list_mesh_cannot_read_names_the_provider():
    class Garbage(EndlessPages):
        async def get(self, path, params=None):
            return b'{"data": "not a list"}'

    with pytest.raises(GatewayError, match="provider p sent a model list Mesh cannot read"):
        asyncio.run(discover(catalog("openai").providers["p"], Garbage("openai"), catalog("openai")))


def test_the_echo_provider_has_no_list():
    with pytest.raises(NotListable):
        asyncio.run(discover(Provider("mesh", "mesh"), EndlessPages("mesh"), catalog("openai")))
