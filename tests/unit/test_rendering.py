"""Template rendering: placeholders, escapes, strict variables, values inserted verbatim."""

import pytest

from domain.rendering import (
    MAX_RENDERED_CHARS,
    CompiledMessages,
    InvalidTemplate,
    TemplateTooLarge,
    TemplateVariableInvalid,
    TemplateVariableMissing,
    TemplateVariableUnknown,
    compile_text,
)


def render(text: str, **variables) -> str:
    return CompiledMessages([{"role": "user", "content": text}]).render(variables)[0]["content"]


@pytest.mark.parametrize("text", ["Hi {{name}}!", "Hi {{ name }}!", "Hi {{   name\t}}!", "Hi {{\nname\n}}!"])
def test_a_placeholder_may_have_spaces_inside_the_braces(text):
    assert render(text, name="Ada") == "Hi Ada!"


def test_every_occurrence_is_replaced_and_variables_are_listed_once_in_order_of_first_use():
    compiled = CompiledMessages(
        [
            {"role": "system", "content": "You are {{persona}}. {{ persona }} again."},
            {"role": "user", "content": "{{name}} asks: {{question}} ({{name}})"},
        ]
    )
    assert compiled.variables == ("persona", "name", "question")
    out = compiled.render({"persona": "a pirate", "name": "Ada", "question": "why?"})
    assert out == [
        {"role": "system", "content": "You are a pirate. a pirate again."},
        {"role": "user", "content": "Ada asks: why? (Ada)"},
    ]


def test_text_without_placeholders_renders_as_it_is():
    assert render("plain } text { with }} braces") == "plain } text { with }} braces"


def test_a_backslash_before_the_braces_writes_literal_braces():
    compiled = compile_text(r"literal \{{ name }} and {{ name }}")
    assert compiled.names == ("name",)
    assert render(r"literal \{{ name }} and {{ name }}", name="x") == "literal {{ name }} and x"
    assert CompiledMessages([{"role": "user", "content": r"\{{only}}"}]).variables == ()


def test_a_missing_variable_is_named():
    with pytest.raises(TemplateVariableMissing) as caught:
        render("{{ a }} {{ b }}", a="1")
    assert caught.value.name == "b" and "'b'" in str(caught.value)
    assert caught.value.code == "template_variable_missing" and caught.value.param == "variables.b"


def test_all_missing_variables_are_listed():
    with pytest.raises(TemplateVariableMissing) as caught:
        render("{{ a }} {{ b }}")
    assert caught.value.name == "a" and "a, b" in str(caught.value)


def test_a_variable_the_template_does_not_use_is_refused():
    with pytest.raises(TemplateVariableUnknown) as caught:
        render("{{ a }}", a="1", typo="2")
    assert caught.value.name == "typo" and caught.value.code == "template_variable_unknown"
    assert "it uses: a" in str(caught.value)
    with pytest.raises(TemplateVariableUnknown):
        render("no variables", a="1")


@pytest.mark.parametrize("value, text", [(3, "3"), (-2, "-2"), (0.3, "0.3"), (1e100, "1e+100"), (10**30, str(10**30))])
def test_numbers_are_written_as_numbers(value, text):
    assert render("n={{n}}", n=value) == f"n={text}"


@pytest.mark.parametrize("value", [True, False, None, ["a"], {"a": 1}])
def test_values_must_be_strings_or_numbers(value):
    with pytest.raises(TemplateVariableInvalid) as caught:
        render("{{v}}", v=value)
    assert caught.value.code == "template_variable_invalid" and "string or a number" in str(caught.value)


@pytest.mark.parametrize(
    "hostile", ["{{x}}", "{{ other }}", r"\{{x}}", "{{", "}}", "{{ x.__class__ }}", "${x}", "{x}", "%(x)s", "{0}"]
)
def test_values_are_inserted_verbatim_never_expanded(hostile):
    assert render("[{{ v }}]", v=hostile) == f"[{hostile}]"


def test_a_value_containing_another_variable_does_not_fill_it():
    assert render("{{a}}|{{b}}", a="{{b}}", b="B") == "{{b}}|B"


def test_huge_values_are_inserted_whole():
    big = "x" * 5_000_000
    assert render("<{{v}}>", v=big) == f"<{big}>"


def test_unicode_in_text_names_and_values():
    assert render("héllo {{ who }} 🌍 — ✓", who="wörld 世界 \u200b") == "héllo wörld 世界 \u200b 🌍 — ✓"
    assert render("{{_x1}}", _x1="ok") == "ok"


@pytest.mark.parametrize(
    "text",
    [
        "{{ a.b }}",
        "{{ a + 1 }}",
        "{{ a|upper }}",
        "{{ }}",
        "{{1a}}",
        "{{ a b }}",
        "{{ __import__('os') }}",
        "{{ a[0] }}",
        "{{ é }}",
        "unclosed {{ a",
        "{{" + "a" * 65 + "}}",
        "{{{a}}}",
    ],
)
def test_anything_but_a_plain_name_between_the_braces_is_refused(text):
    with pytest.raises(InvalidTemplate) as caught:
        compile_text(text)
    assert "\\{{" in str(caught.value)  # says how to write literal braces


def test_a_variable_name_may_be_64_characters():
    assert compile_text("{{" + "a" * 64 + "}}").names == ("a" * 64,)


def test_rendering_does_not_change_the_compiled_template():
    compiled = CompiledMessages([{"role": "user", "content": "{{a}}"}])
    assert compiled.render({"a": "1"}) == [{"role": "user", "content": "1"}]
    assert compiled.render({"a": "2"}) == [{"role": "user", "content": "2"}]


def test_the_rendered_size_is_literals_plus_occurrences_times_value_lengths():
    compiled = CompiledMessages(
        [{"role": "system", "content": "ab{{x}}c{{ y }}{{x}}"}, {"role": "user", "content": r"\{{x}}{{y}}!"}]
    )
    values = {"x": "12345", "y": "é🌍"}
    rendered = compiled.render(values)
    assert compiled.rendered_size(values) == sum(len(m["content"]) for m in rendered) == 3 + 6 + 2 * 5 + 2 * 2


def test_a_render_over_the_bound_is_refused_with_its_size_before_any_text_is_built():
    """256,000 characters of {{a}} with a 40 KB value would be 2 GB: refused from the counts alone."""
    import tracemalloc

    compiled = CompiledMessages([{"role": "user", "content": "{{a}}" * 51_200}])
    value = "x" * 40_000
    tracemalloc.start()
    try:
        with pytest.raises(TemplateTooLarge) as caught:
            compiled.render({"a": value})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    size = 51_200 * 40_000
    assert caught.value.code == "template_too_large" and caught.value.param == "variables"
    assert str(size) in str(caught.value) and str(MAX_RENDERED_CHARS) in str(caught.value)


def test_a_render_of_exactly_the_bound_is_allowed():
    compiled = CompiledMessages([{"role": "user", "content": "<{{a}}>"}])
    assert len(compiled.render({"a": "x" * (MAX_RENDERED_CHARS - 2)})[0]["content"]) == MAX_RENDERED_CHARS
    with pytest.raises(TemplateTooLarge):
        compiled.render({"a": "x" * (MAX_RENDERED_CHARS - 1)})


def test_the_bound_is_the_v1_body_limit():
    from gateway.asgi import MAX_BODY

    assert MAX_RENDERED_CHARS == MAX_BODY
