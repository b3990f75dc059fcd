"""Accounts: sign up, log in and out, change the password (behind the attempt limits of api/logins.py), and
whose a management token is (renewing a session in use)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from api.logins import LoginGuard
from api.read_models import DIRECTORY
from api.services.read_your_writes import ReadModelWaiter
from commands.accounts import AccountCommands, Session
from domain.credentials import hash_token, session_renewal_due
from projections import directory


class AccountService:
    def __init__(
        self,
        accounts: AccountCommands,
        logins: LoginGuard,
        pool: AsyncConnectionPool,
        waiter: ReadModelWaiter,
        session: timedelta,
        signup: str,
        renew_session: Callable[[UUID, str], None],
    ):
        self.accounts = accounts
        self.logins = logins  # attempt limits and the KDF's thread pool
        self.pool = pool
        self.waiter = waiter
        self.session = session  # how long a management token lives unused (MESH_SESSION_DAYS)
        self.signup = signup
        self.renew_session = renew_session  # slides a token's expiry in the background

    @property
    def signup_mode(self) -> str:
        """MESH_SIGNUP: open, invite or closed."""
        return self.signup

    async def sign_up(self, email: str, password: str, client: str, invite_code: str | None = None) -> Session:
        self.accounts.check_signup(invite_code)  # closed, or no code: refused before any password work
        with self.logins.signup(client, email):
            session = await self.logins.run(self.accounts.sign_up, email, password, invite_code)
        await self.waiter.caught_up(DIRECTORY, session.position)
        return session

    async def log_in(self, email: str, password: str, client: str) -> Session:
        with self.logins.login(client, email):
            session = await self.logins.run(self.accounts.log_in, email, password)
        await self.waiter.caught_up(DIRECTORY, session.position)
        return session

    async def change_password(self, account_id: UUID, current: str, new: str) -> Session:
        """A new password revokes every management token of the account; the session returned is a fresh one."""
        with self.logins.password_change(account_id):
            session = await self.logins.run(self.accounts.change_password, account_id, current, new)
        await self.waiter.caught_up(DIRECTORY, session.position)
        return session

    async def log_out(self, account_id: UUID, token_hash: str) -> None:
        """Revoke one management token."""
        await self.waiter.then_caught_up(DIRECTORY, self.accounts.log_out, account_id, token_hash)

    async def account_for(self, management_token: str) -> UUID | None:
        """The account of a live management token (None: unknown or expired); a token in use is renewed."""
        token_hash = hash_token(management_token)
        async with self.pool.connection() as conn:
            session = await directory.session_for_token(conn, token_hash)
        if session is None:
            return None
        account_id, expires_at = session
        if session_renewal_due(expires_at, datetime.now(timezone.utc), self.session):
            self.renew_session(account_id, token_hash)
        return account_id
