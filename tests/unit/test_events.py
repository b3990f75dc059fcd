import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from commands.mapper import MsgspecMapper
from domain.account import Account, EmailClaim
from domain.apikey import ApiKey
from domain.catalog import ModelSettings
from domain.pricing import Price
from domain.invite import Invite
from domain.quota import Holdings
from domain.template import Template, TemplateName
from domain.topup import TopUp
from domain.events import EVENT_TYPES, UnknownEvent, decode_event, event_name, event_names, event_types, events_of
from domain.usage import RequestsRefused, UsageRecorded
from domain.webhook import Webhooks


def aggregate_events():
    account = Account(email="a@example.com", password_hash="h", token_hash="t")
    account.issue_token("t2")
    account.grant_credits(10**12, "welcome", "operator")
    claim = EmailClaim(email="a@example.com", account_id=account.id)
    key = ApiKey(
        account_id=account.id, label="ci", key_hash="k", prefix="mk-abc", spend_cap=None, default_model="mesh/echo"
    )
    now = datetime.now(timezone.utc)
    key.relabel("prod")
    key.change_spend_cap(5 * 10**12, "daily")
    key.change_default_model(None)
    key.change_allowed_models(["mesh/echo"])
    key.change_expiry(now + timedelta(days=1))
    key.change_fit_to_budget(True)
    key.change_rate_limits(60, 100_000)
    key.disable("me")
    key.enable("me")
    key.rotate("k2", "mk-def", now, timedelta(hours=1))
    key.start_period_if_due(now)
    lease = uuid.uuid4()
    key.lease(lease, 10**11, now + timedelta(minutes=15), now)
    account.lease(lease, 10**11, key.id, now + timedelta(minutes=15))
    key.extend_lease(lease, now + timedelta(minutes=30))
    account.extend_lease(lease, now + timedelta(minutes=30))
    key.settle_lease(lease, 5)
    account.settle_lease(lease, 5)
    key.revoke("me")
    account.link_stripe_customer("cus_123")
    account.save_auto_refill_card("card_123", "Visa", "4242", 12, 2034, now)
    account.configure_auto_refill(10**12, 10**13, None, 2)
    first, second = uuid.uuid4(), uuid.uuid4()
    account.trigger_auto_refill(first, 0)
    account.auto_refill_succeeded(first, "pi_1")
    account.rearm_auto_refill(2 * 10**12)
    account.trigger_auto_refill(second, 0)
    account.auto_refill_failed(second, "declined")
    account.debit_credits(10, "refund", "stripe")
    account.disable_auto_refill("by hand")
    account.renew_token("t2", now + timedelta(days=30))
    account.revoke_token("t2")
    account.rehash_password("h2")
    account.change_password("h3", "t3", now + timedelta(days=30))
    account.grant_operator("cli")
    account.revoke_operator("token")
    account.suspend("abuse", "token")
    account.resume("sorted out", str(account.id))
    topup = TopUp(account_id=account.id, provider="stripe", reference="pi_1", amount=10**12)
    topup.fail("card declined")
    topup.refund_to(10**10)  # before the payment: held
    topup.dispute("dp_0", 10**10)
    topup.succeed(10**12, now)
    topup.apply_held()
    topup.refund_to(10**11)
    topup.dispute("dp_1", 10**11)
    lapsed = TopUp(account_id=account.id, provider="bank_transfer", reference="MESH-1", amount=10**12, expires_at=now)
    lapsed.expire(now)
    refused = TopUp(account_id=account.id, provider="bank_transfer", reference="MESH-2", amount=10**12)
    refused.reject("never sent", "token")
    settings = ModelSettings(model_id="acme/gpt")
    settings.change_price(Price(1000, 2000), "operator")
    settings.change_price(Price(1000, 2000, 100, 1250), "operator")
    settings.disable("operator", "token")
    settings.enable("operator")
    added = ModelSettings(model_id="acme/new")
    added.add("acme", "gpt-new", Price(1000, 2000), 4096, 32768, "operator", "token", providers={"acme"}, taken=False)
    template = Template.create(
        account.id,
        "greet",
        None,
        [{"role": "user", "content": "Hi {{ name }}"}],
        {"temperature": 0.3, "stop": ["END"]},
        "account",
    )
    template.save("v2", [{"role": "system", "content": "Be {{persona}}"}], {"max_tokens": 5}, "account")
    template.rename("hello", "account")
    template.label("production", 1, "account")
    template.unlabel("production", "account")
    template.archive("account")
    name = TemplateName(account_id=account.id, name="greet", template_id=template.id)
    name.release(template.id)
    name.claim(template.id)
    holdings = Holdings(account_id=account.id)
    holdings.add_key(key.id, 10)
    holdings.remove_key(key.id)
    holdings.add_template(template.id, 10)
    holdings.remove_template(template.id)
    invite = Invite(code_hash="h", prefix="mi-abc", expires_at=now + timedelta(days=1), by="operator", operator="token")
    invite.use(account.id, now)
    webhooks = Webhooks(account_id=account.id)
    endpoint_id = uuid.uuid4()
    webhooks.add(endpoint_id, "https://example.com/hook", ["balance.low"], 10**12, "ops", allow_private=False)
    webhooks.update(endpoint_id, "https://example.com/hook", ["topup.failed"], None, "", allow_private=False)
    webhooks.remove(endpoint_id)
    return (
        webhooks.collect_events()
        + holdings.collect_events()
        + invite.collect_events()
        + account.collect_events()
        + claim.collect_events()
        + key.collect_events()
        + settings.collect_events()
        + added.collect_events()
        + topup.collect_events()
        + lapsed.collect_events()
        + refused.collect_events()
        + template.collect_events()
        + name.collect_events()
    )


def test_every_aggregate_event_round_trips_through_the_mapper():
    mapper = MsgspecMapper(transcoder=None)
    events = aggregate_events()
    standalone = {name for name, cls in EVENT_TYPES.items() if issubclass(cls, msgspec.Struct)}  # not aggregates
    assert standalone == {"usage.recorded", "usage.refused", "usage.body_recorded"}
    assert {event_name(type(e)) for e in events} == set(EVENT_TYPES) - standalone
    for event in events:
        stored = mapper.to_stored_event(event)
        assert stored.topic == event_name(type(event))
        assert b"originator_id" not in stored.state  # the envelope travels in headers
        again = mapper.to_domain_event(stored)
        assert again == event and type(again) is type(event)
        assert isinstance(again.originator_id, uuid.UUID)


def test_usage_event_round_trips_with_exact_integers():
    event = UsageRecorded(
        trace_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        model="m",
        requested_model=None,
        provider="p",
        prompt_tokens=3,
        completion_tokens=4,
        prompt_per_1k=10**18,
        completion_per_1k=7,
        cost=10**18 + 1,
        status="ok",
        http_status=200,
        timestamp=datetime.now(timezone.utc),
        latency_us=12,
    )
    again = decode_event("usage.recorded", msgspec.json.encode(event), str(event.trace_id), 1)
    assert again == event


def test_old_events_decode_when_new_fields_have_defaults():
    minimal = {
        "trace_id": str(uuid.uuid4()),
        "account_id": str(uuid.uuid4()),
        "key_id": str(uuid.uuid4()),
        "model": "m",
        "requested_model": None,
        "provider": "p",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "prompt_per_1k": 0,
        "completion_per_1k": 0,
        "cost": 0,
        "status": "ok",
        "http_status": 200,
        "timestamp": "2026-01-01T00:00:00Z",
        "latency_us": 1,
    }
    event = decode_event("usage.recorded", msgspec.json.encode(minimal), minimal["trace_id"], 1)
    assert event.stream is False and event.estimated is False and event.error is None


def test_unknown_names_are_refused():
    with pytest.raises(UnknownEvent):
        decode_event("account.exploded", b"{}", str(uuid.uuid4()), 1)


def test_a_refusal_count_round_trips_with_its_name():
    now = datetime.now(timezone.utc)
    event = RequestsRefused(
        refusal_id=uuid.uuid4(),
        account_id=uuid.uuid4(),
        key_id=uuid.uuid4(),
        since=now,
        until=now,
        counts={"key_spend_cap": 22},
    )
    assert event_name(RequestsRefused) == "usage.refused"
    assert decode_event("usage.refused", msgspec.json.encode(event), str(event.refusal_id), 1) == event


def test_the_catalogue_names_classes_and_gives_the_classes_of_names():
    assert event_names([ApiKey.Revoked, TopUp.Succeeded]) == {"key.revoked", "topup.succeeded"}
    assert event_types(["topup.succeeded", "key.revoked"]) == (TopUp.Succeeded, ApiKey.Revoked)
    with pytest.raises(UnknownEvent):
        event_names([ApiKey])
    with pytest.raises(UnknownEvent):
        event_types(["key.unheard_of"])


def test_the_events_of_an_aggregate_are_its_own_in_catalogue_order():
    assert event_names(events_of(Template)) == {name for name in EVENT_TYPES if name.startswith("template.")}
    assert TemplateName.Claimed not in events_of(Template)  # a name that only starts alike is another aggregate
    assert events_of(ApiKey)[0] is ApiKey.Created
    assert set(events_of(Account)) | set(events_of(ApiKey)) | set(events_of(TopUp)) <= set(EVENT_TYPES.values())
