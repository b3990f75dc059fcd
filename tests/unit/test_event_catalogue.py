"""`mesh events schema` and `mesh events docs`: the public shape of every registered event, one source for both."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import jsonschema_rs
import msgspec
import pytest

from api import event_catalogue
from api.cli import main
from domain.account import Account
from domain.events import EVENT_TYPES
from domain.usage import UsageRecorded

pytestmark = pytest.mark.unit


def test_schema_is_a_valid_json_schema_naming_every_registered_event(capsys):
    assert main(["events", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert jsonschema_rs.meta.is_valid(schema)
    assert set(schema["x-mesh-events"]) == set(EVENT_TYPES)
    for name, cls in EVENT_TYPES.items():
        definition = schema["$defs"][name]
        assert set(definition["properties"]) == {f for f, _, _ in event_catalogue.body_fields(cls)}, name


def test_schema_accepts_stored_bodies_and_refuses_a_wrong_type():
    schema = event_catalogue.json_schema()
    usage = UsageRecorded(
        trace_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        model="m",
        requested_model=None,
        provider="openai",
        prompt_tokens=3,
        completion_tokens=4,
        prompt_per_1k=1,
        completion_per_1k=2,
        cost=11,
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=5,
    )
    body = json.loads(msgspec.json.encode(usage))
    one = {**schema, "oneOf": None, "$ref": schema["x-mesh-events"]["usage.recorded"]["$ref"]}
    del one["oneOf"]
    validator = jsonschema_rs.validator_for(one)
    assert validator.is_valid(body)
    assert not validator.is_valid({**body, "cost": "11"})  # money is an integer, never a string or a float
    assert not validator.is_valid({k: v for k, v in body.items() if k != "cost"})


def test_aggregate_event_bodies_leave_the_envelope_to_the_headers():
    fields = [name for name, _, _ in event_catalogue.body_fields(Account.CreditsGranted)]
    assert "originator_id" not in fields and "originator_version" not in fields
    assert fields[:1] == ["timestamp"] and "amount" in fields


def test_docs_events_page_is_what_the_generator_makes():
    """Fails when an event or a field changed without `mesh events docs` being run."""
    text = event_catalogue.EVENTS_PAGE.read_text()
    assert event_catalogue.render_docs(text) == text, "run `mesh events docs` and commit docs/events.md"


def test_generator_adds_a_new_field_and_keeps_the_meanings():
    text = event_catalogue.EVENTS_PAGE.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `account.credits_granted` |"))
    stale = text.replace(row, row.replace(", `granted_by: str`", ""))
    assert stale != text
    assert event_catalogue.render_docs(stale) == text  # the field is back, the meaning kept


def test_generator_refuses_a_block_for_an_unknown_event():
    with pytest.raises(event_catalogue.DocsError, match="not a registered event"):
        event_catalogue.render_docs("<!-- generated: fields usage.nothing -->\n<!-- end generated -->\n")
