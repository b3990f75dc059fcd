"""A template's head: how each template event makes and moves it (the read model and the gateway's cache alike)."""

import uuid

from domain.template import Template
from domain.template_head import HEAD_EVENTS, TemplateHead
from domain.events import events_of

MESSAGES = [{"role": "user", "content": "Hi {{name}}"}]


def heard(template: Template) -> list:
    return template.collect_events()


def test_each_template_event_moves_the_head_as_the_aggregate_moved():
    account = uuid.uuid4()
    template = Template.create(account, "greeting", None, MESSAGES, None, "me")
    template.save(None, MESSAGES, {"temperature": 0.5}, "me")
    template.label("production", 1, "me")
    template.label("staging", 2, "me")
    template.rename("hello", "me")
    template.unlabel("staging", "me")
    created, *after = heard(template)

    head = TemplateHead.created(created)
    assert head == TemplateHead(template.id, account, "greeting", 1, {}, False, 1)
    for e in after:
        head.apply(e)
    assert head == TemplateHead(template.id, account, "hello", 2, {"production": 1}, False, template.version)

    template.archive("me")
    head.apply(*heard(template))
    assert head.archived and head.revision == template.version


def test_an_event_the_head_already_reflects_changes_nothing():
    template = Template.create(uuid.uuid4(), "greeting", None, MESSAGES, None, "me")
    template.rename("hello", "me")
    created, renamed = heard(template)
    head = TemplateHead.created(created)
    head.apply(renamed)
    template.rename("greeting again", "me")
    (again,) = heard(template)
    head.apply(again)
    head.apply(renamed)  # heard a second time, after a later one
    assert head.name == "greeting again" and head.revision == 3


def test_every_template_event_makes_or_moves_a_head():
    assert set(HEAD_EVENTS) == set(events_of(Template))
