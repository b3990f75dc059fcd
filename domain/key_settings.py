"""What an API key's settings may be: its label, spend cap and its reset period, default and allowed models, rate
limits, expiry and rotation grace; and the checks that keep them (domain/apikey.py's ApiKey and the API use them)."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.bounds import MAX_LABEL_LENGTH, MAX_LIST_LENGTH, MAX_MODEL_ID_LENGTH, check_aware, check_text
from domain.money import check_amount

MAX_ROTATION_GRACE = timedelta(days=30)
CAP_PERIODS = ("daily", "weekly", "monthly")
MAX_RPM_LIMIT = 1_000_000  # requests a minute a key may be limited to (null: no limit)
MAX_TPM_LIMIT = 1_000_000_000  # tokens a minute a key may be limited to (null: no limit)


class InvalidKeySettings(ValueError):
    pass


def check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > MAX_LABEL_LENGTH:
        raise InvalidKeySettings(f"label must be 1 to {MAX_LABEL_LENGTH} characters")
    return check_text(label, "label", MAX_LABEL_LENGTH, error=InvalidKeySettings)


def check_spend_cap(spend_cap: int | None) -> int | None:
    if spend_cap is not None and spend_cap < 0:
        raise InvalidKeySettings("spend_cap_usd must not be negative")
    return spend_cap if spend_cap is None else check_amount(spend_cap, "spend_cap_usd", InvalidKeySettings)


def check_model_id(model: str | None, field: str = "default_model") -> str | None:
    return model if model is None else check_text(model, field, MAX_MODEL_ID_LENGTH, error=InvalidKeySettings)


def check_expiry(expires_at: datetime | None) -> datetime | None:
    return check_aware(expires_at, "expires_at", InvalidKeySettings)


def check_cap_period(period: str | None) -> str | None:
    if period is not None and period not in CAP_PERIODS:
        raise InvalidKeySettings(f"cap_reset must be one of {', '.join(CAP_PERIODS)} (or null), got {period!r}")
    return period


def check_cap_has_amount(spend_cap: int | None, cap_reset: str | None) -> None:
    """A cap that resets needs an amount to reset to."""
    if cap_reset is not None and spend_cap is None:
        raise InvalidKeySettings("cap_reset needs a spend_cap_usd")


def check_rate_limit(limit: int | None, field: str, maximum: int) -> int | None:
    """A requests- or tokens-per-minute limit: a whole number from 1 to `maximum`, or None for no limit."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= maximum:
        raise InvalidKeySettings(f"{field} must be a whole number from 1 to {maximum}, or null for no limit")
    return limit


def check_rate_limits(rpm_limit: int | None, tpm_limit: int | None) -> tuple[int | None, int | None]:
    return (
        check_rate_limit(rpm_limit, "rpm_limit", MAX_RPM_LIMIT),
        check_rate_limit(tpm_limit, "tpm_limit", MAX_TPM_LIMIT),
    )


def check_allowed_models(models: list[str] | None) -> list[str] | None:
    if models is None:
        return None
    if len(models) > MAX_LIST_LENGTH:
        raise InvalidKeySettings(f"allowed_models may name at most {MAX_LIST_LENGTH} models")
    cleaned = sorted(
        {
            check_text(m.strip(), "allowed_models entry", MAX_MODEL_ID_LENGTH, error=InvalidKeySettings)
            for m in models
            if m.strip()
        }
    )
    if not cleaned:
        raise InvalidKeySettings("allowed_models must name at least one model, or be null for all models")
    return cleaned
