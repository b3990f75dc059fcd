"""The customer account: who may manage it, and the credits granted to it."""

from __future__ import annotations

import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

EMAIL_PATTERN = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_CREDIT_GRANT = 10**6 * 10**12  # one million USD in pico-USD, per grant


class InvalidEmail(ValueError):
    pass


class InvalidCreditGrant(ValueError):
    pass


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not EMAIL_PATTERN.match(email):
        raise InvalidEmail(f"email must look like name@example.com, got {email[:60]!r}")
    return email


class Account(Aggregate):
    class Registered(Aggregate.Created):
        email: str
        password_hash: str
        token_hash: str

    class TokenIssued(Aggregate.Event):
        token_hash: str

    class CreditsGranted(Aggregate.Event):
        amount: int  # pico-USD, > 0
        reason: str
        granted_by: str

    @event(Registered)
    def __init__(self, email: str, password_hash: str, token_hash: str):
        self.email = email
        self.password_hash = password_hash
        self.token_hashes = [token_hash]
        self.credits = 0

    def issue_token(self, token_hash: str) -> None:
        self._issue_token(token_hash)

    @event(TokenIssued)
    def _issue_token(self, token_hash: str) -> None:
        self.token_hashes.append(token_hash)

    def grant_credits(self, amount: int, reason: str, granted_by: str) -> None:
        if amount <= 0:
            raise InvalidCreditGrant("amount_usd must be greater than zero")
        if amount > MAX_CREDIT_GRANT:
            raise InvalidCreditGrant("amount_usd must be at most 1000000 per grant")
        if not reason.strip() or len(reason) > 500:
            raise InvalidCreditGrant("reason must be 1 to 500 characters")
        self._grant_credits(amount, reason.strip(), granted_by)

    @event(CreditsGranted)
    def _grant_credits(self, amount: int, reason: str, granted_by: str) -> None:
        self.credits += amount


class EmailClaim(Aggregate):
    """Makes an email unique: its id is derived from the email, and it can only be created once."""

    class Claimed(Aggregate.Created):
        email: str
        account_id: UUID

    @staticmethod
    def create_id(email: str) -> UUID:
        return uuid5(NAMESPACE_URL, "mesh:email:" + email)

    @event(Claimed)
    def __init__(self, email: str, account_id: UUID):
        self.email = email
        self.account_id = account_id
