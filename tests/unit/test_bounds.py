"""The rules on what clients send: control characters, lengths, amounts, time zones; each refused by the domain."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import msgspec
import pytest

from domain.account import Account, InvalidEmail, normalise_email
from domain.money import InvalidCreditGrant
from domain.apikey import ApiKey
from domain.key_settings import InvalidKeySettings, check_allowed_models, check_label, check_spend_cap
from domain.bounds import AwareDatetime, InvalidText, Label, Reason, check_aware, check_text
from domain.money import MAX_AMOUNT, InvalidAmount, usd_to_pico
from domain.topup import TopUp, TopUpError


@pytest.mark.parametrize("value", ["a\x00b", "a\x1bb", "a\nb", "a\tb", "a\x7fb", "\x00"])
def test_single_line_text_refuses_control_characters(value):
    with pytest.raises(InvalidText, match="control character"):
        check_text(value, "label", 100)


def test_multi_line_text_allows_tab_and_newlines_but_not_nul():
    assert check_text("line one\n\tline two\r\n", "reason", 100, multiline=True)
    with pytest.raises(InvalidText, match="reason contains a control character"):
        check_text("a\x00", "reason", 100, multiline=True)


def test_text_length_is_bounded():
    assert check_text("é" * 10, "label", 10) == "é" * 10
    with pytest.raises(InvalidText, match="at most 10 characters, got 11"):
        check_text("x" * 11, "label", 10)


def test_the_body_constraints_are_the_same_rules():
    class Body(msgspec.Struct):
        label: Label
        reason: Reason
        at: AwareDatetime

    ok = msgspec.json.decode(b'{"label": "prod", "reason": "a\\nb", "at": "2027-01-01T00:00:00Z"}', type=Body)
    assert ok.reason == "a\nb"
    for bad in (
        b'{"label": "x\\u0000", "reason": "r", "at": "2027-01-01T00:00:00Z"}',
        b'{"label": "' + b"x" * 101 + b'", "reason": "r", "at": "2027-01-01T00:00:00Z"}',
        b'{"label": "p", "reason": "r\\u0000", "at": "2027-01-01T00:00:00Z"}',
        b'{"label": "p", "reason": "r", "at": "2027-01-01T00:00:00"}',
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=Body)


def test_times_need_a_zone():
    assert check_aware(datetime(2027, 1, 1, tzinfo=timezone.utc), "at")
    assert check_aware(None, "at") is None
    with pytest.raises(InvalidText, match="expires_at must include a time zone"):
        check_aware(datetime(2027, 1, 1), "expires_at")


def test_times_are_bounded_so_every_one_is_a_valid_utc_time():
    far = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))  # year 10000 in UTC
    for when in (
        far,
        datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        datetime(9000, 1, 2, tzinfo=timezone.utc),
    ):
        with pytest.raises(InvalidText, match="expires_at must be in the years 1970 to 8999"):
            check_aware(when, "expires_at")
    assert check_aware(datetime(8999, 1, 1, tzinfo=timezone.utc), "expires_at")


def test_every_amount_is_bounded_by_a_million_usd():
    assert usd_to_pico("1000000") == MAX_AMOUNT
    for value in ("1e28", "1000000.01", "1e999999", "-1e28"):
        with pytest.raises(InvalidAmount, match="at most 1000000 USD"):
            usd_to_pico(value, field="spend_cap_usd")
    with pytest.raises(InvalidKeySettings, match="spend_cap_usd must be between 0 and 1000000 USD"):
        check_spend_cap(MAX_AMOUNT + 1)


def test_email_with_nul_is_refused():
    with pytest.raises(InvalidEmail, match="control character"):
        normalise_email("x\x00@a.io")


def test_key_rules_refuse_control_characters_and_naive_expiry():
    with pytest.raises(InvalidKeySettings, match="label contains a control character"):
        check_label("prod\x00")
    with pytest.raises(InvalidKeySettings, match="allowed_models entry contains"):
        check_allowed_models(["acme/gpt\x00"])
    key = ApiKey(account_id=uuid.uuid4(), label="k", key_hash="h", prefix="p", spend_cap=None, default_model=None)
    with pytest.raises(InvalidKeySettings, match="time zone"):
        key.change_expiry(datetime(2027, 1, 1))
    with pytest.raises(InvalidKeySettings, match="default_model contains"):
        key.change_default_model("m\x00")
    assert key.pending_events[-1].__class__ is ApiKey.Created  # nothing recorded by the refusals


def test_account_rules_bound_reasons_and_auto_refill_amounts():
    account = Account(email="a@b.io", password_hash="h", token_hash="t")
    with pytest.raises(InvalidCreditGrant, match="reason contains a control character"):
        account.grant_credits(10**12, "promo\x00", "operator")
    with pytest.raises(InvalidCreditGrant, match="threshold_usd must be between 0 and 1000000 USD"):
        account.configure_auto_refill(MAX_AMOUNT + 1, 10**12, "pm_1", 3)
    with pytest.raises(InvalidCreditGrant, match="payment_method contains"):
        account.configure_auto_refill(10**12, 10**12, "pm_\x00", 3)
    assert len(account.pending_events) == 1


def test_topup_rules():
    with pytest.raises(TopUpError, match="reference contains"):
        TopUp(account_id=uuid.uuid4(), provider="bank_transfer", reference="r\x00", amount=10**12)
    with pytest.raises(TopUpError, match="between 0 and 1000000"):
        TopUp(account_id=uuid.uuid4(), provider="bank_transfer", reference="r", amount=MAX_AMOUNT + 1)
    with pytest.raises(TopUpError, match="time zone"):
        TopUp(
            account_id=uuid.uuid4(),
            provider="bank_transfer",
            reference="r",
            amount=10**12,
            expires_at=datetime.now() + timedelta(days=1),
        )


def test_template_text_refuses_nul_but_keeps_multi_line_content():
    from domain.rendering import InvalidTemplate
    from domain.template_content import check_defaults, check_description, check_messages

    assert check_messages([{"role": "user", "content": "line\n\tline {{x}}"}])
    assert check_defaults({"stop": ["\n\n"]}) == {"stop": ["\n\n"]}
    for refused in (
        lambda: check_messages([{"role": "user", "content": "a\x00"}]),
        lambda: check_description("a\x00"),
        lambda: check_defaults({"model": "m\x00"}),
        lambda: check_defaults({"stop": "\x00"}),
    ):
        with pytest.raises(InvalidTemplate, match="control character"):
            refused()
