"""API keys: what a customer's app uses to call /v1/*. The secret itself is never stored."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.domain import Aggregate, event

MAX_LABEL_LENGTH = 100


class InvalidKeySettings(ValueError):
    pass


def check_label(label: str) -> str:
    label = label.strip()
    if not label or len(label) > MAX_LABEL_LENGTH:
        raise InvalidKeySettings(f"label must be 1 to {MAX_LABEL_LENGTH} characters")
    return label


def check_spend_cap(spend_cap: int | None) -> int | None:
    if spend_cap is not None and spend_cap < 0:
        raise InvalidKeySettings("spend_cap_usd must not be negative")
    return spend_cap


class ApiKey(Aggregate):
    class Created(Aggregate.Created):
        account_id: UUID
        label: str
        key_hash: str
        prefix: str
        spend_cap: int | None  # pico-USD, None = no cap beyond the account balance
        default_model: str | None

    @event(Created)
    def __init__(
        self,
        account_id: UUID,
        label: str,
        key_hash: str,
        prefix: str,
        spend_cap: int | None,
        default_model: str | None,
    ):
        self.account_id = account_id
        self.label = label
        self.key_hash = key_hash
        self.prefix = prefix
        self.spend_cap = spend_cap
        self.default_model = default_model
