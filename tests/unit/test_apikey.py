import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.apikey import ApiKey, InvalidKeySettings, KeyRevoked


def new_key() -> ApiKey:
    return ApiKey(account_id=uuid.uuid4(), label="ci", key_hash="h1", prefix="mk-1", spend_cap=None, default_model=None)


def test_lifecycle_changes_state_and_records_only_real_changes():
    key = new_key()
    key.relabel("ci")  # same label: nothing happens
    key.disable("me")
    key.disable("me")
    assert key.status == "disabled"
    key.enable("me")
    assert key.status == "active"
    names = [type(e).__name__ for e in key.collect_events()]
    assert names == ["Created", "Disabled", "Enabled"]


def test_revoked_is_final():
    key = new_key()
    key.revoke("me")
    for change in (
        lambda: key.enable("me"),
        lambda: key.relabel("x"),
        lambda: key.change_spend_cap(1, None),
        lambda: key.rotate("h2", "mk-2", datetime.now(timezone.utc), timedelta(0)),
    ):
        with pytest.raises(KeyRevoked):
            change()
    assert key.status == "revoked"
    assert len(key.collect_events()) == 2


def test_invalid_settings_change_nothing():
    key = new_key()
    key.collect_events()
    for change in (
        lambda: key.relabel(" "),
        lambda: key.change_spend_cap(-1, None),
        lambda: key.change_spend_cap(None, "daily"),
        lambda: key.change_spend_cap(5, "hourly"),
        lambda: key.change_allowed_models([" "]),
        lambda: key.change_expiry(datetime(2030, 1, 1)),
        lambda: key.rotate("h2", "mk-2", datetime.now(timezone.utc), timedelta(days=31)),
    ):
        with pytest.raises(InvalidKeySettings):
            change()
    assert key.collect_events() == []


def test_rotation_keeps_the_old_secret_for_the_grace_period():
    key = new_key()
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    key.rotate("h2", "mk-2", now, timedelta(hours=2))
    rotated = key.collect_events()[-1]
    assert (rotated.previous_hash, rotated.previous_valid_until) == ("h1", now + timedelta(hours=2))
    assert key.key_hash == "h2"
