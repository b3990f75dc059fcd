"""Sign up and log in."""

from __future__ import annotations

import asyncio
from uuid import UUID

import msgspec
from litestar import Controller, Request, post

from api.runtime import DIRECTORY, Runtime
from domain.bounds import Email


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: str


class SessionOut(msgspec.Struct):
    account_id: UUID
    management_token: str


class AccountController(Controller):
    path = "/api"

    @post("/signup", status_code=201)
    async def signup(self, request: Request, data: Credentials) -> SessionOut:
        runtime: Runtime = request.app.state.runtime
        session = await asyncio.to_thread(runtime.accounts.sign_up, data.email, data.password)
        await runtime.caught_up(DIRECTORY, session.position)
        return SessionOut(session.account_id, session.management_token)

    @post("/login", status_code=200)
    async def login(self, request: Request, data: Credentials) -> SessionOut:
        runtime: Runtime = request.app.state.runtime
        session = await asyncio.to_thread(runtime.accounts.log_in, data.email, data.password)
        await runtime.caught_up(DIRECTORY, session.position)
        return SessionOut(session.account_id, session.management_token)
