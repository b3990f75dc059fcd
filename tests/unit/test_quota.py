"""Quotas counted by an account's holdings, and invite codes: single use, optionally expiring."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.invite import Invite, SignupRefused, check_signup_mode
from domain.quota import Holdings, QuotaExceeded, check_versions

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def test_holdings_refuse_past_the_limit_and_a_removal_frees_a_place():
    account = uuid.uuid4()
    holdings = Holdings(account_id=account)
    assert holdings.id == Holdings.create_id(account)
    first, second = uuid.uuid4(), uuid.uuid4()
    holdings.add_key(first, 2)
    holdings.add_key(second, 2)
    with pytest.raises(QuotaExceeded) as refused:
        holdings.add_key(uuid.uuid4(), 2)
    assert (refused.value.code, refused.value.limit) == ("key_quota_exceeded", 2) and "(2)" in str(refused.value)
    holdings.remove_key(first)
    holdings.remove_key(first)  # once
    holdings.add_key(uuid.uuid4(), 2)
    holdings.add_template(first, 1)
    with pytest.raises(QuotaExceeded, match="templates"):
        holdings.add_template(second, 1)
    names = [type(e).__name__ for e in holdings.collect_events()]
    assert names.count("KeyRemoved") == 1 and names.count("TemplateAdded") == 1


def test_a_template_takes_versions_up_to_its_limit():
    check_versions(2, 3)
    with pytest.raises(QuotaExceeded) as refused:
        check_versions(3, 3)
    assert refused.value.code == "template_version_quota_exceeded"


def test_an_invite_admits_one_account_until_it_expires():
    invite = Invite(code_hash="h", prefix="mi-abc", expires_at=NOW + timedelta(days=1), by="operator")
    assert invite.id == Invite.create_id("h")
    invite.use(uuid.uuid4(), NOW)
    with pytest.raises(SignupRefused, match="already used"):
        invite.use(uuid.uuid4(), NOW)
    late = Invite(code_hash="g", prefix="mi-def", expires_at=NOW, by="operator")
    with pytest.raises(SignupRefused, match="expired") as refused:
        late.use(uuid.uuid4(), NOW)
    assert refused.value.code == "invite_invalid"


def test_the_signup_mode_is_one_of_three():
    assert [check_signup_mode(m) for m in ("open", "invite", "closed")] == ["open", "invite", "closed"]
    with pytest.raises(ValueError, match="open, invite, closed"):
        check_signup_mode("invite-only")
