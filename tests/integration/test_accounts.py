"""Account use cases against a real event store and the directory read model in a real PostgreSQL: the same KDF
work for unknown emails, legacy hashes upgraded at login, and tokens issued, renewed, revoked and expired."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from commands import accounts as accounts_module
from commands.accounts import AccountCommands, BadCredentials, WrongPassword
from commands.app import MeshApplication
from domain import credentials
from domain.account import Account, EmailClaim
from domain.credentials import PASSWORD_KDF, hash_token, needs_rehash
from projections import directory
from projections.directory import Directory
from projections.readmodel import ensure_schema
from projections.runner import ProjectionRunner
from projections.source import StreamSource
from tests.integration.test_projections import env  # noqa: F401  (the fixture: NATS, PostgreSQL, the app)

DIRECTORY = Directory()
PASSWORD = "correct horse battery"


def email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
def kdf_runs(monkeypatch) -> list:
    """The parameters of every KDF run (the real KDF still runs)."""
    runs: list = []
    real = credentials.derive

    def spy(password, salt, params):
        runs.append(params)
        return real(password, salt, params)

    monkeypatch.setattr(credentials, "derive", spy)
    return runs


def test_an_unknown_email_costs_the_same_kdf_run_as_a_wrong_password(app, kdf_runs):
    commands = AccountCommands(app)
    known = email()
    commands.sign_up(known, PASSWORD)
    kdf_runs.clear()
    with pytest.raises(BadCredentials, match="email or password is wrong") as wrong:
        commands.log_in(known, "not the password")
    assert kdf_runs == [PASSWORD_KDF]
    with pytest.raises(BadCredentials) as unknown:
        commands.log_in(email(), "not the password")
    assert kdf_runs == [PASSWORD_KDF, PASSWORD_KDF]  # the dummy verify ran, at today's parameters
    assert str(wrong.value) == str(unknown.value)


def legacy_account(app: MeshApplication) -> tuple[Account, str, str]:
    """An account saved with PASSWORD hashed the old way (scrypt n=2**14) and a token "mt-old"; with its email
    and that hash."""
    salt = bytes(16)
    legacy = f"scrypt${salt.hex()}${hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32).hex()}"
    address = email()
    account = Account(email=address, password_hash=legacy, token_hash=hash_token("mt-old"))
    app.save_all(account, EmailClaim(email=address, account_id=account.id))
    return account, address, legacy


def test_a_legacy_hash_is_upgraded_at_the_next_login_and_the_password_still_works(app, kdf_runs):
    account, address, legacy = legacy_account(app)
    commands = AccountCommands(app)
    with pytest.raises(BadCredentials):
        commands.log_in(address, "wrong password")
    assert app.account(account.id).password_hash == legacy  # a wrong password upgrades nothing
    commands.log_in(address, PASSWORD)
    upgraded = app.account(account.id).password_hash
    assert upgraded != legacy and not needs_rehash(upgraded) and PASSWORD not in upgraded
    assert topics(app, account.id)[-2:] == ["account.password_rehashed", "account.token_issued"]
    assert hash_token("mt-old") in app.account(account.id).token_hashes  # a rehash revokes nothing
    commands.log_in(address, PASSWORD)  # already upgraded: no second rehash
    assert topics(app, account.id)[-3:] == ["account.password_rehashed", "account.token_issued", "account.token_issued"]
    assert app.account(account.id).password_hash == upgraded


def test_two_log_ins_that_both_upgrade_a_legacy_hash_both_succeed(app, monkeypatch):
    """Both verify the old hash; the second to save finds it already rehashed by the first: same password,
    so it logs in (once a 401) and does not rehash again."""
    account, address, legacy = legacy_account(app)
    commands = AccountCommands(app)
    real_hash = accounts_module.hash_password
    others: list = []

    def hash_while_another_logs_in(password: str) -> str:
        if not others:  # the first log-in has verified the legacy hash: another one completes meanwhile
            others.append(None)
            others[0] = commands.log_in(address, PASSWORD)
        return real_hash(password)

    monkeypatch.setattr(accounts_module, "hash_password", hash_while_another_logs_in)
    first = commands.log_in(address, PASSWORD)
    assert first.management_token and others and others[0].management_token != first.management_token
    assert topics(app, account.id).count("account.password_rehashed") == 1
    assert not needs_rehash(app.account(account.id).password_hash)


def topics(app: MeshApplication, aggregate_id: uuid.UUID) -> list[str]:
    return [stored.topic for stored in app.recorder.select_events(aggregate_id)]


async def test_tokens_in_the_directory_expire_slide_and_are_revoked(env):
    nc, pool, app, stream_name = env
    now = [datetime.now(timezone.utc)]
    commands = AccountCommands(app, session=timedelta(hours=1), clock=lambda: now[0])
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
