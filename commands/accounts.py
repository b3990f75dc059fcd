"""Account use cases: sign up, log in, grant credits."""

from __future__ import annotations

from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from commands.app import MeshApplication
from domain.account import Account, EmailClaim, normalise_email
from domain.credentials import MIN_PASSWORD_LENGTH, hash_password, new_management_token, verify_password


class EmailTaken(ValueError):
    pass


class InvalidPassword(ValueError):
    pass


class BadCredentials(PermissionError):
    pass


class Session(msgspec.Struct, frozen=True):
    account_id: UUID
    management_token: str  # plain text, shown once
    position: int


class AccountCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def sign_up(self, email: str, password: str) -> Session:
        email = normalise_email(email)
        if len(password) < MIN_PASSWORD_LENGTH or len(password) > 256:
            raise InvalidPassword(f"password must be {MIN_PASSWORD_LENGTH} to 256 characters")
        token = new_management_token()
        account = Account(email=email, password_hash=hash_password(password), token_hash=token.hash)
        claim = EmailClaim(email=email, account_id=account.id)
        try:
            position = self.app.save_all(account, claim)  # atomic: both or neither
        except RecordConflictError:
            raise EmailTaken(f"an account with email {email} already exists") from None
        return Session(account.id, token.plain, position)

    def log_in(self, email: str, password: str) -> Session:
        def use_case() -> Session:
            try:
                claim = self.app.repository.get(EmailClaim.create_id(normalise_email(email)))
                account: Account = self.app.repository.get(claim.account_id)
            except (AggregateNotFoundError, ValueError):
                raise BadCredentials("email or password is wrong") from None
            if not verify_password(password, account.password_hash):
                raise BadCredentials("email or password is wrong")
            token = new_management_token()
            account.issue_token(token.hash)
            return Session(account.id, token.plain, self.app.save_all(account))

        return self.app.retrying(use_case)

    def grant_credits(self, account_id: UUID, amount: int, reason: str, granted_by: str) -> int:
        def use_case() -> int:
            account = self.app.account(account_id)
            account.grant_credits(amount, reason, granted_by)
            return self.app.save_all(account)

        return self.app.retrying(use_case)
