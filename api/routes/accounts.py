"""Sign up, log in and out, change the password.

The password routes run their use case in the KDF's own thread pool, behind attempt limits per email and per
client address (see api/logins.py).
"""

from __future__ import annotations

from uuid import UUID


import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency, Provide
from litestar.params import JSONBody

from api.client_address import client_address
from api.openapi import ACCOUNT, errors
from api.auth import current_account, presented_token_hash
from api.security_headers import NO_STORE
from domain.bounds import Email, Reference
from api.services.accounts import AccountService


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: str


class SignupIn(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: str
    invite_code: Reference | None = None  # needed when MESH_SIGNUP=invite


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: str
    new_password: str


class SessionOut(msgspec.Struct):
    account_id: UUID
    management_token: str


class AccountController(Controller):
    path = "/api"

    @post("/signup", status_code=201, cache_control=NO_STORE, responses=errors(400, 403, 409, 429, 503))
    async def signup(
        self, request: Request, account_service: NamedDependency[AccountService], data: JSONBody[SignupIn]
    ) -> SessionOut:
        session = await account_service.sign_up(data.email, data.password, client_address(request), data.invite_code)
        return SessionOut(session.account_id, session.management_token)

    @post("/login", status_code=200, cache_control=NO_STORE, responses=errors(400, 401, 403, 429, 503))
    async def login(
        self, request: Request, account_service: NamedDependency[AccountService], data: JSONBody[Credentials]
    ) -> SessionOut:
        session = await account_service.log_in(data.email, data.password, client_address(request))
        return SessionOut(session.account_id, session.management_token)

    @post("/logout", status_code=204, dependencies={"account_id": Provide(current_account)}, security=ACCOUNT)
    async def logout(
        self, request: Request, account_service: NamedDependency[AccountService], account_id: NamedDependency[UUID]
    ) -> None:
        """Revoke the management token this request carries."""
        await account_service.log_out(account_id, presented_token_hash(request))

    @post(
        "/password",
        status_code=200,
        cache_control=NO_STORE,
        dependencies={"account_id": Provide(current_account)},
        security=ACCOUNT,
        responses=errors(400, 403, 429),
    )
    async def change_password(
        self,
        account_service: NamedDependency[AccountService],
        account_id: NamedDependency[UUID],
        data: JSONBody[PasswordChange],
    ) -> SessionOut:
        """A new password revokes every management token of the account; the answer carries a fresh one."""
        session = await account_service.change_password(account_id, data.current_password, data.new_password)
        return SessionOut(session.account_id, session.management_token)
