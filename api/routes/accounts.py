"""Sign up and log in."""

from __future__ import annotations

from uuid import UUID

import msgspec
from litestar import Controller, post

from api.services.accounts import AccountService


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    email: str
    password: str


class SessionOut(msgspec.Struct):
    account_id: UUID
    management_token: str


class AccountController(Controller):
    path = "/api"

    @post("/signup", status_code=201)
    async def signup(self, account_service: AccountService, data: Credentials) -> SessionOut:
        session = await account_service.sign_up(data.email, data.password)
        return SessionOut(session.account_id, session.management_token)

    @post("/login", status_code=200)
    async def login(self, account_service: AccountService, data: Credentials) -> SessionOut:
        session = await account_service.log_in(data.email, data.password)
        return SessionOut(session.account_id, session.management_token)
