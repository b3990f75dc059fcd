"""The gateway's template cache: one read per name, heads moved by events, lagging read models corrected."""

import asyncio
import uuid

import msgspec
import pytest

from domain.template import Template
from gateway.errors import GatewayError
from domain.template_head import TemplateHead
from gateway.prompt_templates import TemplateCache, merge

ACCOUNT = uuid.uuid4()


class ReadModel:
    """What the templates read model would answer, fed by hand so a test can make it lag."""

    def __init__(self):
        self.heads: dict[str, TemplateHead] = {}
        self.versions: dict[tuple, tuple] = {}
        self.reads = 0

    def reflect(self, template: Template) -> None:
        self.heads = {n: h for n, h in self.heads.items() if h.template_id != template.id}
        if not template.archived:
            self.heads[template.name] = TemplateHead(
                template.id,
                ACCOUNT,
                template.name,
                len(template.versions),
                dict(template.labels),
                False,
                template.version,
            )
        for v in template.versions:
            self.versions[(template.id, v.number)] = (v.messages, v.defaults)

    async def head(self, account_id, name):
        self.reads += 1
        head = self.heads.get(name) if account_id == ACCOUNT else None
        return msgspec.structs.replace(head, labels=dict(head.labels)) if head else None

    async def version(self, template_id, version):
        self.reads += 1
        return self.versions.get((template_id, version))


def hear(cache: TemplateCache, template: Template) -> None:
    for e in template.collect_events():
        cache.apply(e)


def stored(template: Template) -> tuple[ReadModel, TemplateCache]:
    """A read model that has applied the template's events so far, and a cache reading from it."""
    store = ReadModel()
    store.reflect(template)
    template.collect_events()
    return store, TemplateCache(store)


def new_template(name="greet") -> Template:
    return Template.create(
        ACCOUNT, name, None, [{"role": "user", "content": "v1 {{x}}"}], {"temperature": 0.3}, "account"
    )


def save(template: Template, text: str) -> None:
    template.save(None, [{"role": "user", "content": text}], {}, "account")


def rendered(cache: TemplateCache, reference: str, account=ACCOUNT) -> str:
    version = asyncio.run(cache.resolve(account, reference))
    return version.messages.render({"x": "1"})[0]["content"]


def test_a_template_is_read_once_then_served_from_memory():
    template = new_template()
    store, cache = stored(template)
    assert rendered(cache, "greet") == "v1 1"
    reads = store.reads
    for _ in range(5):
        assert rendered(cache, "greet@1") == "v1 1"
    assert store.reads == reads


def test_events_move_a_cached_head_without_a_read():
    template = new_template()
    store, cache = stored(template)
    rendered(cache, "greet")
    reads = store.reads
    save(template, "v2 {{x}}")
    template.label("production", 1, "account")
    hear(cache, template)  # the read model has not seen these yet
    assert rendered(cache, "greet") == "v2 1" and rendered(cache, "greet@production") == "v1 1"
    assert store.reads == reads  # version 2 came with its event


def test_a_load_from_a_lagging_read_model_is_brought_forward_by_events_heard():
    template = new_template()
    _, cache = stored(template)
    save(template, "v2 {{x}}")
    template.label("production", 2, "account")
    hear(cache, template)  # heard before the gateway ever loaded the template; the read model still lags
    assert rendered(cache, "greet") == "v2 1" and rendered(cache, "greet@production") == "v2 1"


def test_a_template_created_but_not_yet_in_the_read_model_is_found_from_its_event():
    store, template = ReadModel(), new_template()
    cache = TemplateCache(store)
    with pytest.raises(GatewayError) as missing:
        rendered(cache, "greet")
    assert missing.value.status == 404 and missing.value.code == "template_not_found"
    hear(cache, template)  # "no such template" is forgotten, and the event tells what the read model lacks
    assert rendered(cache, "greet") == "v1 1"


def test_archived_and_renamed_templates_stop_answering_to_their_old_name():
    template = new_template()
    store, cache = stored(template)
    rendered(cache, "greet")
    template.rename("hello", "account")
    hear(cache, template)
    assert rendered(cache, "hello") == "v1 1"
    with pytest.raises(GatewayError):
        rendered(cache, "greet")
    template.archive("account")
    hear(cache, template)
    with pytest.raises(GatewayError):
        rendered(cache, "hello")


def test_a_name_freed_by_archiving_resolves_to_the_template_that_takes_it():
    old = new_template()
    _, cache = stored(old)
    rendered(cache, "greet")
    old.archive("account")
    hear(cache, old)
    successor = Template.create(ACCOUNT, "greet", None, [{"role": "user", "content": "new {{x}}"}], None, "account")
    hear(cache, successor)  # before the read model has it
    assert rendered(cache, "greet") == "new 1"
    old.collect_events()


def test_another_account_never_resolves_the_template():
    template = new_template()
    store, cache = stored(template)
    with pytest.raises(GatewayError):
        rendered(cache, "greet", account=uuid.uuid4())


def test_unknown_versions_and_labels_are_404s_that_say_what_exists():
    template = new_template()
    store, cache = stored(template)
    for reference, says in [("greet@2", "1 to 1"), ("greet@prod", "labels: none yet")]:
        with pytest.raises(GatewayError) as caught:
            rendered(cache, reference)
        assert caught.value.status == 404 and caught.value.code == "template_version_not_found"
        assert says in caught.value.message


def test_expand_puts_the_template_first_and_lets_the_request_win():
    template = new_template()
    store, cache = stored(template)
    raw = msgspec.json.encode(
        {"template": "greet", "variables": {"x": 7}, "temperature": 1, "messages": [{"role": "user", "content": "own"}]}
    )
    body = msgspec.json.decode(raw)
    used = asyncio.run(cache.expand(ACCOUNT, body))
    assert body == {
        "temperature": 1,
        "messages": [{"role": "user", "content": "v1 7"}, {"role": "user", "content": "own"}],
    }
    assert used.template_id == template.id and used.version == 1
    untouched = {"messages": [{"role": "user", "content": "hi"}]}
    assert asyncio.run(cache.expand(ACCOUNT, untouched)) is None
    assert untouched == {"messages": [{"role": "user", "content": "hi"}]}


def test_merge_fills_only_what_the_request_leaves_unset():
    body = {"max_completion_tokens": 5, "top_p": None}
    merge(body, [{"role": "system", "content": "s"}], {"max_tokens": 9, "top_p": 0.5, "model": "m", "stop": "X"})
    assert body == {
        "max_completion_tokens": 5,
        "top_p": 0.5,
        "model": "m",
        "stop": "X",
        "messages": [{"role": "system", "content": "s"}],
    }
