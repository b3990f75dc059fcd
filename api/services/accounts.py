"""Accounts: sign up, log in, and who a management token belongs to."""

from __future__ import annotations

import asyncio
from uuid import UUID

from api.runtime import DIRECTORY, Runtime
from commands.accounts import Session
from domain.credentials import hash_token
from projections import directory


class AccountService:
    def __init__(self, runtime: Runtime):
        self.runtime = runtime

    async def sign_up(self, email: str, password: str) -> Session:
        session = await asyncio.to_thread(self.runtime.accounts.sign_up, email, password)
        await self.runtime.caught_up(DIRECTORY, session.position)
        return session

    async def log_in(self, email: str, password: str) -> Session:
        session = await asyncio.to_thread(self.runtime.accounts.log_in, email, password)
        await self.runtime.caught_up(DIRECTORY, session.position)
        return session

    async def account_for(self, management_token: str) -> UUID | None:
        async with self.runtime.pool.connection() as conn:
            return await directory.account_for_token(conn, hash_token(management_token))
