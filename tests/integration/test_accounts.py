"""Account use cases against a real event store and the directory read model in a real PostgreSQL: tokens issued,
renewed, revoked and expired. (The use cases alone, on either event store: tests/unit/test_command_contract.py.)"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from commands.accounts import AccountCommands, BadCredentials, WrongPassword
from domain.credentials import hash_token
from projections import directory
from projections.directory_projection import Directory
from projections.readmodel import ensure_schema
from projections.runner import ProjectionRunner
from projections.source import StreamSource
from tests.conftest import TEST_KDF
from tests.integration.test_projections import env  # noqa: F401  (the fixture: NATS, PostgreSQL, the app)

DIRECTORY = Directory()
PASSWORD = "correct horse battery"


def email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.com"


async def test_tokens_in_the_directory_expire_slide_and_are_revoked(env):
    nc, pool, app, stream_name = env
    now = [datetime.now(timezone.utc)]
    commands = AccountCommands(app, password_kdf=TEST_KDF, session=timedelta(hours=1), clock=lambda: now[0])
    runner = ProjectionRunner(DIRECTORY, StreamSource(nc, stream_name), pool)

    async def session_of(token: str):
        await runner.catch_up()
        async with pool.connection() as conn:
            return await directory.session_for_token(conn, hash_token(token))

    address = email()
    first = await asyncio.to_thread(commands.sign_up, address, PASSWORD)
    second = await asyncio.to_thread(commands.log_in, address, PASSWORD)
    account_id, expires = await session_of(first.management_token)
    assert account_id == first.account_id and expires == now[0] + timedelta(hours=1)

    now[0] -= timedelta(hours=2)  # a token issued two hours ago, with a one-hour session, has expired
    stale = await asyncio.to_thread(commands.log_in, address, PASSWORD)
    assert await session_of(stale.management_token) is None
    now[0] += timedelta(hours=2)

    await asyncio.to_thread(commands.renew_session, first.account_id, hash_token(first.management_token))
    assert (await session_of(first.management_token))[1] == now[0] + timedelta(hours=1)

    await asyncio.to_thread(commands.log_out, first.account_id, hash_token(first.management_token))
    assert await session_of(first.management_token) is None
    assert await session_of(second.management_token) is not None
    await asyncio.to_thread(commands.log_out, first.account_id, hash_token(first.management_token))  # idempotent
    # a revoked token is never renewed back to life
    await asyncio.to_thread(commands.renew_session, first.account_id, hash_token(first.management_token))
    assert await session_of(first.management_token) is None

    with pytest.raises(WrongPassword):
        await asyncio.to_thread(commands.change_password, first.account_id, "not the password", "a new password")
    changed = await asyncio.to_thread(commands.change_password, first.account_id, PASSWORD, "a new password")
    assert await session_of(second.management_token) is None
    assert await session_of(stale.management_token) is None
    assert (await session_of(changed.management_token))[0] == first.account_id
    with pytest.raises(BadCredentials):
        await asyncio.to_thread(commands.log_in, address, PASSWORD)
    await asyncio.to_thread(commands.log_in, address, "a new password")

    # no password and no token in plain text in any event, only hashes
    secrets = [PASSWORD, "a new password", first.management_token, second.management_token, changed.management_token]
    js = nc.jetstream()
    info = await js.stream_info(stream_name)
    for seq in range(1, info.state.last_seq + 1):
        body = (await js.get_msg(stream_name, seq)).data.decode()
        assert not [s for s in secrets if s in body]


async def test_an_upgrade_adds_the_expiry_column_to_a_directory_built_before_it(database_url):
    """A directory generation made by an older Mesh (no expires_at) is brought up to date at start."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await ensure_schema(conn, [DIRECTORY])
        await conn.execute("drop view management_tokens")
        await conn.execute("alter table management_tokens_g1 drop column expires_at")
        await conn.execute("create view management_tokens as select * from management_tokens_g1")
        await conn.execute(
            "insert into management_tokens_g1 values ('h', %s, now() - interval '29 days')", (uuid.uuid4(),)
        )
        await conn.execute(
            "insert into management_tokens_g1 values ('old', %s, now() - interval '31 days')", (uuid.uuid4(),)
        )
        await ensure_schema(conn, [DIRECTORY])
        assert await directory.session_for_token(conn, "h") is not None  # legacy tokens live 30 days
        assert await directory.session_for_token(conn, "old") is None


async def test_the_directory_holds_roles_suspensions_and_the_operators_actions(env):
    from commands.keys import KeyCommands

    nc, pool, app, stream_name = env
    commands = AccountCommands(app, password_kdf=TEST_KDF)
    runner = ProjectionRunner(DIRECTORY, StreamSource(nc, stream_name), pool)
    operator_session = await asyncio.to_thread(commands.sign_up, email(), PASSWORD)
    customer = await asyncio.to_thread(commands.sign_up, email(), PASSWORD)
    key = await asyncio.to_thread(KeyCommands(app).create, customer.account_id, "k", None, None)
    operator_email = app.account(operator_session.account_id).email
    await asyncio.to_thread(commands.set_operator, operator_email, True, "cli")
    acting = str(operator_session.account_id)
    await asyncio.to_thread(commands.grant_credits, customer.account_id, 10**12, "welcome", "operator", acting)
    await asyncio.to_thread(commands.grant_credits, customer.account_id, 10**12, "top-up", "operator")  # no operator
    await asyncio.to_thread(commands.suspend, customer.account_id, "abuse", "token")
    await runner.catch_up()
    async with pool.connection() as conn:
        assert await directory.is_operator(conn, operator_session.account_id)
        assert not await directory.is_operator(conn, customer.account_id)
        row = await directory.account_row(conn, customer.account_id)
        assert row is not None and row.suspended == "abuse" and row.suspended_at is not None
        found = await directory.key_by_hash(conn, key.key.key_hash)
        assert found is not None and found[2] is True  # the gateway loads the key refused
        acts = await directory.operator_actions(conn, 10, account_id=customer.account_id)
        assert [(a.action, a.operator, a.details.get("amount_usd")) for a in acts] == [
            ("account suspended", "token", None),
            ("credits granted", acting, "1.000000"),
        ]
        everyone = [(a.action, a.operator, a.target) for a in await directory.operator_actions(conn, 10)]
        assert ("operator role given", "cli", acting) in everyone
        assert [r.account_id for r in await directory.find_accounts(conn, customer_email_part(app, customer), 5)] == [
            customer.account_id
        ]
    await asyncio.to_thread(commands.resume, customer.account_id, "sorted", acting)
    await runner.catch_up()
    async with pool.connection() as conn:
        assert (await directory.account_row(conn, customer.account_id)).suspended is None
        assert (await directory.key_by_hash(conn, key.key.key_hash))[2] is False
        newest = (await directory.operator_actions(conn, 1))[0]
        assert (newest.action, newest.operator, newest.operator_email) == ("account resumed", acting, operator_email)


def customer_email_part(app, session) -> str:
    """The middle of the account's email, in capitals: found whatever its case."""
    return app.account(session.account_id).email[2:7].upper()
