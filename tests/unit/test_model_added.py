"""Adding a model at runtime (domain/catalog.py ModelSettings.add): the rules, the event, and the catalog serving
it (gateway/catalog.py Catalog.add) as mesh.toml's models are served."""

from __future__ import annotations

import pytest

from domain.catalog import MAX_TOKEN_LIMIT, MODEL_CHANGES, InvalidModel, ModelSettings, ModelTaken
from domain.pricing import Price
from gateway.catalog import LIMIT_DEFAULTS, Catalog, Model, Provider, resolved_limits

pytestmark = pytest.mark.unit

PRICE = Price(1_000_000_000, 2_000_000_000)
PROVIDERS = {"acme"}


def add(settings: ModelSettings, provider="acme", upstream="gpt-new", limits=(4096, 32768), taken=False, **kw):
    settings.add(provider, upstream, PRICE, *limits, "operator", "token", providers=PROVIDERS, taken=taken, **kw)


def test_an_added_model_is_one_event_with_its_price_limits_and_operator():
    settings = ModelSettings(model_id="acme/gpt-new")
    add(settings)
    added = settings.collect_events()[-1]
    assert isinstance(added, ModelSettings.Added)
    assert (added.model_id, added.provider, added.upstream) == ("acme/gpt-new", "acme", "gpt-new")
    assert (added.prompt_per_1k, added.completion_per_1k) == (PRICE.prompt_per_1k, PRICE.completion_per_1k)
    assert (added.cached_per_1k, added.cache_write_per_1k) == (None, None)
    assert (added.max_output_tokens, added.context_tokens, added.operator, added.by) == (
        4096,
        32768,
        "token",
        "operator",
    )
    assert settings.added and settings.enabled and settings.price == PRICE


def test_each_model_event_changes_the_price_or_the_switch_as_the_aggregate_does():
    """MODEL_CHANGES is what the catalog read model and the gateway's catalog apply: it agrees with the aggregate."""
    settings = ModelSettings(model_id="acme/gpt-new")
    add(settings)
    cheaper = Price(500_000_000, 1_000_000_000, 100_000_000)
    settings.change_price(cheaper, "operator")
    settings.disable("operator")
    settings.enable("operator")
    seen = [(type(e), MODEL_CHANGES[type(e)](e)) for e in settings.collect_events() if type(e) in MODEL_CHANGES]
    assert seen == [
        (ModelSettings.Added, (PRICE, True)),
        (ModelSettings.PriceChanged, (cheaper, None)),
        (ModelSettings.Disabled, (None, False)),
        (ModelSettings.Enabled, (None, True)),
    ]
    assert (settings.price, settings.enabled) == (cheaper, True)


@pytest.mark.parametrize("taken", [True, False])
def test_a_taken_id_is_refused(taken):
    settings = ModelSettings(model_id="acme/gpt-new")
    if not taken:
        add(settings)  # added already
    settings.collect_events()
    with pytest.raises(ModelTaken, match="acme/gpt-new"):
        add(settings, taken=taken)
    assert not settings.collect_events()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"provider": "nope"}, "provider 'nope' is not a provider of mesh.toml; known: acme"),
        ({"provider": "mesh"}, "not a provider of mesh.toml"),
        ({"upstream": " "}, "upstream .* must not be empty"),
        ({"upstream": "x" * 201}, "upstream must be at most 200"),
        ({"upstream": "a\nb"}, "upstream contains a control character"),
        ({"limits": (0, 10)}, "max_output_tokens must be at least 1 and at most"),
        ({"limits": (10, MAX_TOKEN_LIMIT + 1)}, "context_tokens must be at least 1 and at most"),
        ({"limits": (20, 10)}, r"max_output_tokens \(20\) is larger than its context_tokens \(10\)"),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(change, message):
    settings = ModelSettings(model_id="acme/gpt-new")
    settings.collect_events()
    with pytest.raises(InvalidModel, match=message):
        add(settings, **change)
    assert not settings.collect_events() and not settings.added


@pytest.mark.parametrize(
    ("model_id", "message"),
    [
        ("acme/\x00", "id contains a control character"),
        ("", "must not be empty"),
        (" acme/x", "start or end with a space"),
        ("/acme/x", "start with '/'"),
        ("a" * 201, "id must be at most 200"),
    ],
)
def test_an_id_a_client_cannot_send_as_it_is_refused(model_id, message):
    settings = ModelSettings(model_id=model_id)
    settings.collect_events()
    with pytest.raises(InvalidModel, match=message):
        add(settings)
    assert not settings.collect_events()


def catalog() -> Catalog:
    declared = Model("acme/declared", "acme", "gpt-4o", PRICE, aliases=("declared",))
    return Catalog([Provider("acme", "openai", "http://x")], [declared])


def test_the_catalog_serves_an_added_model_with_the_limits_mesh_toml_would_give():
    c = catalog()
    model = c.add("acme/new", "acme", "some-new-model", PRICE)
    assert model is not None and c.get("acme/new") == model
    assert (model.max_output_tokens, model.context_tokens) == LIMIT_DEFAULTS["openai"]
    assert (model.max_output_tokens, model.context_tokens) == resolved_limits("openai", "some-new-model", None, None)
    assert c.add("acme/gpt4o", "acme", "gpt-4o-2025", PRICE, None, None).max_output_tokens == 16_384  # by family


def test_the_catalog_keeps_mesh_toml_first_and_an_added_model_as_it_is():
    c = catalog()
    assert c.add("acme/declared", "acme", "other", Price(0, 0)) is None
    assert c.add("declared", "acme", "other", Price(0, 0)) is None  # an alias
    assert c.add("acme/orphan", "gone", "other", Price(0, 0)) is None  # its provider is no longer declared
    assert c.add("mesh/echo2", "mesh", "echo", Price(0, 0)) is None
    c.add("acme/new", "acme", "m", PRICE)
    c.apply("acme/new", price=Price(0, 0))
    c.add("acme/new", "acme", "m", PRICE)  # heard again (live, then from the read model): the change stays
    assert c.models["acme/new"].price == Price(0, 0)


def test_at_a_past_instant_an_added_model_is_listed_once_added_at_the_price_then():
    c = catalog()
    c.add("acme/new", "acme", "m", PRICE)
    c.apply("acme/new", price=Price(0, 0))
    assert [m.id for m in c.enabled_with({})] == ["mesh/echo", "acme/declared"]  # before it was added
    listed = {m.id: m for m in c.enabled_with({"acme/new": (PRICE, True)})}
    assert listed["acme/new"].price == PRICE
    assert "acme/new" not in {m.id for m in c.enabled_with({"acme/new": (PRICE, False)})}
