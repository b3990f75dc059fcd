"""The key form's fields as the key service takes them: the same for the create and the edit form."""

from datetime import datetime, timezone

import pytest
from litestar.datastructures import FormMultiDict

from api.dashboard.key_pages import key_settings
from api.input_errors import InvalidInput


def test_every_field_is_read_and_an_empty_one_is_no_setting():
    form = FormMultiDict(
        [
            ("spend_cap_usd", "12.50"),
            ("cap_reset", "daily"),
            ("default_model", "acme/a"),
            ("allowed_models", "acme/a"),
            ("allowed_models", "acme/b"),
            ("expires_at", "2031-01-31T18:00"),
            ("fit_to_budget", "on"),
            ("rpm_limit", "60"),
            ("tpm_limit", " 100000 "),
        ]
    )
    assert key_settings(form) == {
        "spend_cap_usd": "12.50",
        "cap_reset": "daily",
        "default_model": "acme/a",
        "allowed_models": ["acme/a", "acme/b"],
        "expires_at": datetime(2031, 1, 31, 18, 0, tzinfo=timezone.utc),
        "fit_to_budget": True,
        "rpm_limit": 60,
        "tpm_limit": 100000,
    }
    empty = {"spend_cap_usd": "", "cap_reset": "", "default_model": "", "expires_at": "", "rpm_limit": ""}
    assert key_settings(FormMultiDict(empty)) == {
        "spend_cap_usd": None,
        "cap_reset": None,
        "default_model": None,
        "allowed_models": None,
        "expires_at": None,
        "fit_to_budget": False,
        "rpm_limit": None,
        "tpm_limit": None,
    }


def test_an_expiry_that_is_not_a_date_and_time_is_refused_naming_the_field():
    with pytest.raises(InvalidInput, match="expires_at: takes a date and time such as 2027-01-31T18:00"):
        key_settings(FormMultiDict({"expires_at": "next tuesday"}))


@pytest.mark.parametrize("value", ["ten", "-5", "1.5", "9" * 13])
def test_a_rate_limit_that_is_not_a_whole_number_is_refused_naming_the_field(value):
    with pytest.raises(InvalidInput, match="rpm_limit: takes a whole number, or nothing for no limit"):
        key_settings(FormMultiDict({"rpm_limit": value}))
