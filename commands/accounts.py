"""Account use cases: sign up, log in and out, change the password, renew a session, grant credits.

The password use cases run the KDF (about half a second of CPU); callers run them off the event loop, in
a thread pool of their own.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable
from uuid import UUID

import secrets

import msgspec
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import RecordConflictError

from commands.app import MeshApplication, NotFound
from domain.account import Account, EmailClaim, normalise_email
from domain.bounds import check_aware
from domain.credentials import (
    PASSWORD_KDF,
    NewSecret,
    ScryptParams,
    hash_token,
    InvalidPassword,
    check_new_password,
    check_presented_password,
    dummy_password_hash,
    hash_password,
    needs_rehash,
    new_management_token,
    verify_password,
)
from domain.invite import INVITE_PREFIX, Invite, SignupRefused, check_signup_mode

__all__ = [
    "AccountCommands",
    "BadCredentials",
    "EmailTaken",
    "InvalidInvite",
    "InvalidPassword",
    "SignupRefused",
    "Session",
    "WrongPassword",
    "DEFAULT_SESSION",
]

DEFAULT_SESSION = timedelta(days=30)


class EmailTaken(ValueError):
    pass


class InvalidInvite(ValueError):
    pass


class BadCredentials(PermissionError):
    pass


class WrongPassword(PermissionError):
    """The current password given to change it is wrong."""


class Session(msgspec.Struct, frozen=True):
    account_id: UUID
    management_token: str  # plain text, shown once
    position: int


class AccountCommands:
    def __init__(
        self,
        app: MeshApplication,
        session: timedelta = DEFAULT_SESSION,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        signup: str = "open",
        password_kdf: ScryptParams = PASSWORD_KDF,
    ):
        self.app = app
        self.session = session  # how long a management token lives after it was issued or last renewed
        self.clock = clock
        self.signup = check_signup_mode(signup)  # MESH_SIGNUP: open, invite or closed
        self.password_kdf = password_kdf  # what new password hashes are made with (MESH_PASSWORD_KDF_LOG_N)
        self._dummy_hash = dummy_password_hash(password_kdf)

    def check_signup(self, invite_code: str | None) -> None:
        """Refuse at once what the sign-up mode refuses, before any password work."""
        if self.signup == "closed":
            raise SignupRefused("signup_closed", "sign-up is closed on this server; ask its operator for an account")
        if self.signup == "invite" and not (invite_code or "").strip():
            raise SignupRefused("invite_required", "sign-up on this server needs an invite code (invite_code)")

    def sign_up(self, email: str, password: str, invite_code: str | None = None) -> Session:
        self.check_signup(invite_code)
        email = normalise_email(email)
        check_new_password(password)
        token = new_management_token()
        password_hash = hash_password(password, self.password_kdf)

        def use_case() -> Session:
            account = Account(
                email=email, password_hash=password_hash, token_hash=token.hash, token_expires_at=self._expiry()
            )
            claim = EmailClaim(email=email, account_id=account.id)
            invite = self._invite(invite_code) if self.signup == "invite" else None
            if invite is not None:
                invite.use(account.id, self.clock())
            try:  # atomic: all or none
                position = self.app.save_all(account, claim, *([invite] if invite is not None else []))
            except RecordConflictError:
                if invite is not None and self._invite(invite_code).used_by is not None:
                    raise SignupRefused(
                        "invite_invalid", "this invite code was already used; ask for a new one"
                    ) from None
                if self._email_claimed(email) or invite is None:
                    raise EmailTaken(f"an account with email {email} already exists") from None
                raise  # something else changed the invite: once more
            return Session(account.id, token.plain, position)

        return self.app.retrying(use_case)

    def create_invite(
        self, expires_at: datetime | None, by: str = "operator", operator: str | None = None
    ) -> tuple[Invite, str, int]:
        """A new single-use invite code: (invite, the code in plain text, shown once, position)."""
        if expires_at is not None and check_aware(expires_at, "expires_at", InvalidInvite) <= self.clock():
            raise InvalidInvite("expires_at must be in the future")
        code = NewSecret(INVITE_PREFIX + secrets.token_urlsafe(16))
        invite = Invite(code_hash=code.hash, prefix=code.prefix, expires_at=expires_at, by=by, operator=operator)
        return invite, code.plain, self.app.save_all(invite)

    def _invite(self, code: str | None) -> Invite:
        try:
            invite = self.app.repository.get(Invite.create_id(hash_token((code or "").strip())))
        except AggregateNotFoundError:
            invite = None
        if not isinstance(invite, Invite):
            raise SignupRefused("invite_invalid", "this invite code is not valid; check it or ask for a new one")
        return invite

    def _email_claimed(self, email: str) -> bool:
        try:
            self.app.repository.get(EmailClaim.create_id(email))
        except AggregateNotFoundError:
            return False
        return True

    def log_in(self, email: str, password: str) -> Session:
        check_presented_password(password)
        account = self._account_of(normalise_email(email))
        # an unknown email runs the same KDF as a known one (against a hash nothing matches)
        verified = account.password_hash if account is not None else self._dummy_hash
        if not verify_password(password, verified) or account is None:
            raise BadCredentials("email or password is wrong")
        account.check_active()  # the right password of a suspended account: told so, nothing issued
        rehashed = hash_password(password, self.password_kdf) if needs_rehash(verified, self.password_kdf) else None
        token = new_management_token()
        changes = account.password_changes

        def use_case() -> Session:  # the KDF ran once, above; a retry after a concurrent write only reloads
            current = self.app.account(account.id)
            if current.password_changes != changes:
                raise BadCredentials("email or password is wrong")  # changed since it was checked
            current.check_active()
            if rehashed is not None and current.password_hash == verified:  # not rehashed by a log-in meanwhile
                current.rehash_password(rehashed)
            current.issue_token(token.hash, self._expiry())
            return Session(current.id, token.plain, self.app.save_all(current))

        return self.app.retrying(use_case)

    def change_password(self, account_id: UUID, current_password: str, new_password: str) -> Session:
        """Every token of the account stops working; the answer carries a fresh one."""
        check_presented_password(current_password)
        check_new_password(new_password)
        checked = self.app.account(account_id)
        if not verify_password(current_password, checked.password_hash):
            raise WrongPassword("current_password is wrong")
        new_hash = hash_password(new_password, self.password_kdf)
        token = new_management_token()

        def use_case() -> Session:
            account = self.app.account(account_id)
            if account.password_changes != checked.password_changes:
                raise WrongPassword("the password was changed meanwhile; current_password is no longer it")
            account.change_password(new_hash, token.hash, self._expiry())
            return Session(account.id, token.plain, self.app.save_all(account))

        return self.app.retrying(use_case)

    def log_out(self, account_id: UUID, token_hash: str) -> int:
        def use_case() -> int:
            account = self.app.account(account_id)
            account.revoke_token(token_hash)
            return self.app.save_all(account)

        return self.app.retrying(use_case)

    def renew_session(self, account_id: UUID, token_hash: str) -> int:
        """Slide a token's expiry to a full session from now (if it is still live)."""

        def use_case() -> int:
            account = self.app.account(account_id)
            account.renew_token(token_hash, self._expiry())
            return self.app.save_all(account)

        return self.app.retrying(use_case)

    def grant_credits(
        self, account_id: UUID, amount: int, reason: str, granted_by: str, operator: str | None = None
    ) -> int:
        def use_case() -> int:
            account = self.app.account(account_id)
            account.grant_credits(amount, reason, granted_by, operator)
            return self.app.save_all(account)

        return self.app.retrying(use_case)

    def take_back_credits(self, account_id: UUID, amount: int, reason: str, operator: str) -> int:
        return self._change(account_id, lambda account: account.take_back_credits(amount, reason, operator))

    def suspend(self, account_id: UUID, reason: str, operator: str) -> int:
        return self._change(account_id, lambda account: account.suspend(reason, operator))

    def resume(self, account_id: UUID, reason: str, operator: str) -> int:
        return self._change(account_id, lambda account: account.resume(reason, operator))

    def set_operator(self, email: str, operator: bool, by: str) -> tuple[UUID, int]:
        """Give the account of `email` the operator role, or take it away: (the account, position; 0 when
        nothing changed). NotFound without such an account."""
        found = self._account_of(normalise_email(email))
        if found is None:
            raise NotFound(f"no account with email {normalise_email(email)}; sign up first")

        def change(account: Account) -> None:
            account.grant_operator(by) if operator else account.revoke_operator(by)

        return found.id, self._change(found.id, change)

    def _change(self, account_id: UUID, decide: Callable[[Account], None]) -> int:
        """Load the account, let it decide, save what it decided (0: nothing)."""

        def use_case() -> int:
            account = self.app.account(account_id)
            decide(account)
            return self.app.save_all(account) if account.pending_events else 0

        return self.app.retrying(use_case)

    def _expiry(self) -> datetime:
        return self.clock() + self.session

    def _account_of(self, email: str) -> Account | None:
        try:
            claim = self.app.repository.get(EmailClaim.create_id(email))
            return self.app.repository.get(claim.account_id)
        except AggregateNotFoundError:
            return None
