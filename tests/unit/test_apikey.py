import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.apikey import ApiKey, KeyRevoked
from domain.key_settings import InvalidKeySettings


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


def test_rate_limits_are_set_at_creation_and_changed_only_when_different():
    from domain.key_settings import MAX_RPM_LIMIT, MAX_TPM_LIMIT

    key = ApiKey.create(uuid.uuid4(), "ci", "h1", "mk-1", None, None, rpm_limit=10, tpm_limit=5000)
    assert (key.rpm_limit, key.tpm_limit) == (10, 5000)
    key.collect_events()
    key.change_rate_limits(10, 5000)  # the same: nothing happens
    assert key.collect_events() == []
    key.change_rate_limits(MAX_RPM_LIMIT, None)
    (changed,) = key.collect_events()
    assert isinstance(changed, ApiKey.RateLimitsChanged)
    assert (changed.rpm_limit, changed.tpm_limit) == (MAX_RPM_LIMIT, None)
    key.change_rate_limits(None, MAX_TPM_LIMIT)
    assert (key.rpm_limit, key.tpm_limit) == (None, MAX_TPM_LIMIT)


@pytest.mark.parametrize(
    "rpm, tpm", [(0, None), (-1, None), (None, 0), (1_000_001, None), (None, 1_000_000_001), (True, None), (1.5, None)]
)
def test_out_of_range_rate_limits_are_refused_and_change_nothing(rpm, tpm):
    key = new_key()
    key.collect_events()
    with pytest.raises(InvalidKeySettings, match="rpm_limit" if rpm is not None else "tpm_limit"):
        key.change_rate_limits(rpm, tpm)
    with pytest.raises(InvalidKeySettings):
        ApiKey.create(uuid.uuid4(), "ci", "h1", "mk-1", None, None, rpm_limit=rpm, tpm_limit=tpm)
    assert key.collect_events() == [] and (key.rpm_limit, key.tpm_limit) == (None, None)


def test_a_revoked_key_keeps_its_rate_limits():
    key = new_key()
    key.revoke("me")
    with pytest.raises(KeyRevoked):
        key.change_rate_limits(5, None)
