"""msgspec's validation errors in Mesh's words: the field, what was wrong, what is allowed; never a regex."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
import pytest

from api.app import create_litestar
from api.input_errors import PATTERN_RULES, body_error, query_error
from api.openapi import openapi_document
from api.routes.keys import KeyIn
from api.routes.prompt_templates import TemplateIn
from api.routes.topups import TopUpIn


def _patterns(node, found: set[str]) -> set[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            found.add(node["pattern"])
        for value in node.values():
            _patterns(value, found)
    elif isinstance(node, list):
        for value in node:
            _patterns(value, found)
    return found


def test_every_pattern_the_document_states_has_its_rule_in_words():
    app = create_litestar(None)
    document = openapi_document(app)
    patterns = _patterns(document, set())
    assert patterns and patterns <= set(PATTERN_RULES), patterns - set(PATTERN_RULES)


def refused(body: bytes, body_type) -> tuple[str, str | None, str]:
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.json.decode(body, type=body_type, strict=True)
    error = body_error(info.value, body_type)
    message = str(error)
    assert "regex" not in message and "`" not in message and "$." not in message, message
    return message, error.param, error.code


@pytest.mark.parametrize(
    "body, body_type, param, code, words",
    [
        (
            b'{"label": "a\\u0000"}',
            KeyIn,
            "label",
            "invalid_key_settings",
            ["contains a character that is not allowed"],
        ),
        (b'{"label": ""}', KeyIn, "label", "invalid_key_settings", ["too few characters", "1 to 100 characters"]),
        (b'{"label": "a", "cap_reset": "hourly"}', KeyIn, "cap_reset", "invalid_key_settings", ["'hourly'", "daily"]),
        (b'{"label": "a", "spend_cap_usd": 1.5}', KeyIn, "spend_cap_usd", "invalid_amount", ['"12.50"']),
        (b'{"label": "a", "colour": 1}', KeyIn, "colour", "invalid_request", ["fields are label"]),
        (b'{"amount_usd": true}', TopUpIn, "amount_usd", "invalid_amount", ["got true or false"]),
        (b'{"amount_usd": "1e3"}', TopUpIn, "amount_usd", "invalid_amount", ["at most 12 decimals"]),
        (
            b'{"name": "a", "messages": [{"role": "tool", "content": "x"}]}',
            TemplateIn,
            "messages[0].role",
            "invalid_template",
            ["'tool' is not one of the allowed values", "assistant, system, user"],
        ),
        (b'{"name": "a\\u200bb", "messages": []}', TemplateIn, "name", "invalid_template", ["invisible"]),
        (
            b'{"name": "a", "messages": [{"role": "user", "content": "x"}], "defaults": {"temperature": 3}}',
            TemplateIn,
            "defaults.temperature",
            "invalid_template",
            ["too large", "from 0 to 2"],
        ),
        (b'{"messages": [{"role": "user", "content": "x"}]}', TemplateIn, "name", "invalid_template", ["is required"]),
    ],
)
def test_a_refused_body_names_the_field_and_what_it_takes(body, body_type, param, code, words):
    message, got_param, got_code = refused(body, body_type)
    assert message.startswith(f"invalid request body: {param}: "), message
    assert (got_param, got_code) == (param, code)
    for word in words:
        assert word in message, (word, message)


def test_a_refused_query_value_is_quoted_with_the_rule():
    pattern = next(p for p in PATTERN_RULES if "provider" in p)
    message = str(
        query_error(
            "group_by", "Expected `str` matching regex '^x$'", Annotated[str, msgspec.Meta(pattern=pattern)], "nope"
        )
    )
    assert message == (
        "invalid query parameter: group_by: is not in the allowed form (got 'nope'); "
        "group_by takes a comma-separated list of provider, model, key, day, hour"
    )
    assert not re.search(r"[\\^$]", message)


def test_the_document_is_completed_once_when_first_asked_for_not_when_the_app_is_built():
    from api.openapi import FINISHED

    app = create_litestar(None)
    assert not app.state.get(FINISHED)
    document = openapi_document(app)
    assert app.state[FINISHED] and "ErrorResponse" in document["components"]["schemas"]
    assert openapi_document(app) is document
