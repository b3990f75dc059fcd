"""The template editor's form: the rows as posted, its message buttons without JavaScript, and what a save sends."""

import pytest
from litestar.datastructures import FormMultiDict

from api.dashboard import template_form
from api.errors import ApiError
from domain.template_content import MAX_MESSAGES


def rows(*pairs):
    return [{"role": role, "content": content} for role, content in pairs]


def posted(*pairs, **fields):
    return FormMultiDict(
        [*[(k, v) for role, content in pairs for k, v in (("role", role), ("content", content))], *fields.items()]
    )


def test_the_form_is_read_as_typed_with_line_breaks_as_newlines_and_saved_without_blank_messages():
    form = posted(
        ("system", "Be {{tone}}.\r\nBrief."),
        ("user", "  "),
        ("assistant", "ok\r"),
        name=" greeting ",
        description="one\r\ntwo",
        temperature="0.5",
        top_p="",
        max_tokens="64",
        stop="END\r\nSTOP\r\n",
        model="acme/a",
    )
    editor = template_form.read(form)
    assert editor.messages == rows(("system", "Be {{tone}}.\nBrief."), ("user", "  "), ("assistant", "ok\n"))
    content = template_form.content(editor)
    assert content.name == "greeting"
    assert content.description == "one\ntwo"
    assert content.messages == rows(("system", "Be {{tone}}.\nBrief."), ("assistant", "ok\n"))
    assert content.defaults == {"model": "acme/a", "temperature": 0.5, "max_tokens": 64, "stop": ["END", "STOP"]}
    assert template_form.content(template_form.read(posted(("user", "x"), description=" \r\n"))).description is None


def test_a_number_that_is_not_one_is_said_in_plain_words():
    for field, raw, said in (
        ("temperature", "warm", "Temperature must be a number; got 'warm'"),
        ("max_tokens", "1.5", "Max tokens must be a whole number; got '1.5'"),
        ("top_p", "9" * 5000, f"Top p must be a number; got '{'9' * 20}'"),
    ):
        with pytest.raises(ApiError) as refused:
            template_form.content(template_form.read(posted(("user", "x"), **{field: raw})))
        assert refused.value.message == said


def test_message_buttons_add_remove_and_move_without_saving():
    editor = template_form.Editor(name="t", messages=rows(("system", "a"), ("user", "b"), ("assistant", "")))
    assert template_form.apply(editor, "up-2").messages == rows(("user", "b"), ("system", "a"), ("assistant", ""))
    assert template_form.apply(editor, "down-1").messages == rows(("user", "b"), ("system", "a"), ("assistant", ""))
    assert template_form.apply(editor, "up-1").messages == editor.messages  # already first
    assert template_form.apply(editor, "down-3").messages == editor.messages  # already last
    assert template_form.apply(editor, "remove-1").messages == rows(("user", "b"), ("assistant", ""))
    assert template_form.apply(editor, "add").messages[-1] == {"role": "user", "content": ""}
    assert editor.messages == rows(("system", "a"), ("user", "b"), ("assistant", ""))  # the editor itself unchanged
    alone = template_form.Editor(messages=rows(("system", "a")))
    assert template_form.apply(alone, "remove-1").messages == rows(("user", ""))  # a row to write in stays
    for forged in ("up-4", "remove-0", "sideways-1", "add-1", "up-1000"):
        with pytest.raises(ApiError):
            template_form.apply(editor, forged)


def test_the_message_count_is_bounded_as_the_domain_bounds_it():
    full = template_form.Editor(messages=rows(*[("user", "x")] * MAX_MESSAGES))
    with pytest.raises(ApiError) as refused:
        template_form.apply(full, "add")
    assert refused.value.message == f"a template holds at most {MAX_MESSAGES} messages"
    with pytest.raises(ApiError):
        template_form.read(posted(*[("user", "x")] * (MAX_MESSAGES + 2)))
    assert len(template_form.read(posted(*[("user", "x")] * (MAX_MESSAGES + 1))).messages) == MAX_MESSAGES + 1
    assert len(template_form.blank().messages) == 3  # system, user, and a row for the assistant's


def test_a_blank_variable_is_named():
    assert template_form.blank_variables(["topic"]) == "topic is empty: fill it in to test; nothing was sent"
    assert (
        template_form.blank_variables(["a", "b", "c"]) == "a, b and c are empty: fill them in to test; nothing was sent"
    )
