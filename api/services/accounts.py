"""Accounts: sign up, log in and out, change the password (behind the attempt limits of api/logins.py), and
whose a management token is (renewing a session in use)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from uuid import UUID

from api.runtime import DIRECTORY, Runtime
from commands.accounts import Session
from domain.credentials import hash_token, session_renewal_due
from projections import directory


class AccountService:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    @property
    def signup_mode(self) -> str:
        """MESH_SIGNUP: open, invite or closed."""
        return self.runtime.signup

    async def sign_up(self, email: str, password: str, client: str, invite_code: str | None = None) -> Session:
        runtime = self.runtime
        runtime.accounts.check_signup(invite_code)  # closed, or no code: refused before any password work
        with runtime.logins.signup(client, email):
            session = await runtime.logins.run(runtime.accounts.sign_up, email, password, invite_code)
        await runtime.caught_up(DIRECTORY, session.position)
        return session

    async def log_in(self, email: str, password: str, client: str) -> Session:
        runtime = self.runtime
        with runtime.logins.login(client, email):
            session = await runtime.logins.run(runtime.accounts.log_in, email, password)
        await runtime.caught_up(DIRECTORY, session.position)
        return session

    async def change_password(self, account_id: UUID, current: str, new: str) -> Session:
        """A new password revokes every management token of the account; the session returned is a fresh one."""
        runtime = self.runtime
        with runtime.logins.password_change(account_id):
            session = await runtime.logins.run(runtime.accounts.change_password, account_id, current, new)
        await runtime.caught_up(DIRECTORY, session.position)
        return session

    async def log_out(self, account_id: UUID, token_hash: str) -> None:
        """Revoke one management token."""
        position = await asyncio.to_thread(self.runtime.accounts.log_out, account_id, token_hash)
        await self.runtime.caught_up(DIRECTORY, position)

    async def account_for(self, management_token: str) -> UUID | None:
        """The account of a live management token (None: unknown or expired); a token in use is renewed."""
        runtime = self.runtime
        token_hash = hash_token(management_token)
        async with runtime.pool.connection() as conn:
            session = await directory.session_for_token(conn, token_hash)
        if session is None:
            return None
        account_id, expires_at = session
        if session_renewal_due(expires_at, datetime.now(timezone.utc), runtime.session):
            runtime.renew_session(account_id, token_hash)
        return account_id
