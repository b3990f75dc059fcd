"""The Template aggregate: versions, labels, archiving, bounds; and the name claim."""

import uuid

import pytest

from domain.rendering import InvalidTemplate
from domain.template import (
    Template,
    TemplateArchived,
    TemplateName,
    TemplateNameTaken,
    TemplateNotFound,
    parse_reference,
    pick_version,
)
from domain.template_content import MAX_MESSAGES, MAX_NAME_LENGTH

ACCOUNT = uuid.uuid4()


def new(name="greet", messages=None, defaults=None) -> Template:
    return Template.create(
        ACCOUNT,
        name,
        None,
        [{"role": "user", "content": "Hi {{name}}"}] if messages is None else messages,
        defaults,
        "account",
    )


def test_every_save_is_a_new_version_and_old_versions_stay():
    t = new(defaults={"temperature": 0.3})
    t.save("second", [{"role": "user", "content": "Hello {{name}}"}], {"temperature": 0.5}, "account")
    t.save("second", [{"role": "user", "content": "Hello {{name}}"}], {"temperature": 0.5}, "account")
    assert [v.number for v in t.versions] == [1, 2, 3]
    assert t.pick(1).messages == [{"role": "user", "content": "Hi {{name}}"}]
    assert t.pick(None).number == 3 and t.pick("latest").number == 3 and t.pick("2").number == 2
    saved = [e for e in t.collect_events() if isinstance(e, Template.VersionSaved)]
    assert saved[0].changed == ["description", "messages", "defaults.temperature"]
    assert saved[1].changed == []


def test_labels_point_at_a_version_and_move():
    t = new()
    t.save(None, [{"role": "user", "content": "v2 {{name}}"}], None, "account")
    t.label("production", 1, "account")
    assert t.pick("production").number == 1
    t.label("production", 2, "account")
    assert t.pick("production").number == 2
    labeled = [e for e in t.collect_events() if isinstance(e, Template.Labeled)]
    assert [(e.version, e.previous_version) for e in labeled] == [(1, None), (2, 1)]
    t.unlabel("production", "account")
    with pytest.raises(TemplateNotFound):
        t.pick("production")


@pytest.mark.parametrize("label", ["", "3", "latest", "Prod", "has space", "-x", "x" * 41])
def test_bad_labels_are_refused(label):
    with pytest.raises(InvalidTemplate):
        new().label(label, 1, "account")


def test_a_label_must_name_an_existing_version():
    with pytest.raises(TemplateNotFound):
        new().label("production", 2, "account")


def test_an_archived_template_keeps_its_history_but_cannot_change():
    t = new()
    t.archive("account")
    assert t.archived and t.pick(1).number == 1
    with pytest.raises(TemplateArchived):
        t.save(None, [{"role": "user", "content": "x"}], None, "account")
    with pytest.raises(TemplateArchived):
        t.label("production", 1, "account")


@pytest.mark.parametrize(
    "name",
    ["", " ", "x" * (MAX_NAME_LENGTH + 1), "a@b", "tab\there", "new\nline", "nul\x00", "bidi\u202e", "zero\u200bwidth"],
)
def test_bad_names_are_refused(name):
    with pytest.raises(InvalidTemplate):
        new(name=name)


def test_names_may_be_unicode_and_are_trimmed():
    assert new(name="  Grüße / summary v2 ").name == "Grüße / summary v2"


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [{"role": "tool", "content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": "user"}],
        [{"role": "user", "content": "x" * 100_001}],
        [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1),
        [{"role": "user", "content": "x" * 100_000}] * 3,
        [{"role": "user", "content": "{{ a.b }}"}],
    ],
)
def test_bad_messages_are_refused(messages):
    with pytest.raises(InvalidTemplate):
        new(messages=messages)


@pytest.mark.parametrize(
    "defaults",
    [
        {"temperature": 2.5},
        {"temperature": "0.3"},
        {"temperature": True},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"max_tokens": 1.5},
        {"stop": []},
        {"stop": ["a"] * 5},
        {"stop": [""]},
        {"stop": 3},
        {"model": ""},
        {"seed": 1},
    ],
)
def test_bad_defaults_are_refused(defaults):
    with pytest.raises(InvalidTemplate):
        new(defaults=defaults)


def test_defaults_keep_what_is_set():
    t = new(
        defaults={"model": "acme/gpt", "temperature": 0, "top_p": 1, "max_tokens": 5, "stop": "END"} | {"top_p": None}
    )
    assert t.latest.defaults == {"model": "acme/gpt", "temperature": 0, "max_tokens": 5, "stop": "END"}


@pytest.mark.parametrize(
    "reference, parsed",
    [
        ("greet", ("greet", None)),
        ("greet@3", ("greet", "3")),
        ("greet@production", ("greet", "production")),
        ("greet@", ("greet", None)),
        (" greet @ 2 ", ("greet", "2")),
    ],
)
def test_references_name_a_template_and_optionally_a_version_or_label(reference, parsed):
    assert parse_reference(reference) == parsed


def test_picking_a_version_that_does_not_exist_says_which_exist():
    with pytest.raises(TemplateNotFound, match="1 to 2"):
        pick_version(2, {}, "3")
    with pytest.raises(TemplateNotFound, match="production"):
        pick_version(2, {"production": 1}, "staging")


def test_a_name_claim_is_held_by_one_template_until_released():
    first, second = uuid.uuid4(), uuid.uuid4()
    claim = TemplateName(account_id=ACCOUNT, name="greet", template_id=first)
    assert claim.id == TemplateName.create_id(ACCOUNT, "greet") != TemplateName.create_id(uuid.uuid4(), "greet")
    with pytest.raises(TemplateNameTaken):
        claim.claim(second)
    claim.claim(first)  # the holder again: nothing changes
    claim.release(second)  # not the holder: nothing changes
    assert claim.template_id == first
    claim.release(first)
    claim.claim(second)
    assert claim.template_id == second
