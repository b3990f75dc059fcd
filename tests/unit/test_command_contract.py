"""The command side's use cases against eventsourcing's contract for an event store, run twice: on its in-memory
persistence (POPO: the unit tier, no server) and on the JetStream event store Mesh runs on (commands/eventstore.py:
the integration tier, a real nats-server), so the recorder keeps every promise the use cases rely on.

What only the JetStream store can show (concurrent writers in other processes' applications, atomic batches,
what the stream holds) stays in tests/integration."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from commands import accounts as accounts_module
from commands.accounts import AccountCommands, BadCredentials, EmailTaken
from commands.app import MeshApplication
from commands.leasing import BudgetCommands
from commands.keys import KeyCommands
from commands.prompt_templates import TemplateCommands
from domain import credentials
from domain.account import Account, EmailClaim
from domain.credentials import PASSWORD_KDF, ScryptParams, hash_token, needs_rehash
from domain.template import TemplateNameTaken

from tests.conftest import TEST_KDF

PASSWORD = "correct horse battery"
MESSAGES = [{"role": "user", "content": "Hi {{name}}"}]
CREDITS = 10**12
IN_MEMORY = {"PERSISTENCE_MODULE": "eventsourcing.popo"}  # eventsourcing's own, instead of commands.eventstore


@pytest.fixture(
    params=[
        pytest.param("popo", marks=pytest.mark.unit),
        pytest.param("jetstream", marks=pytest.mark.integration),
    ]
)
def app(request):
    """The application on the in-memory store, or on a fresh stream of the session's nats-server."""
    if request.param == "popo":
        application = MeshApplication("", env=IN_MEMORY)
    else:
        application = MeshApplication(request.getfixturevalue("nats_url"), request.getfixturevalue("stream_name"))
    yield application
    application.close()


def email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture
def funded(app):
    """An account with CREDITS and a key with a spend cap of half of them: (account id, key id)."""
    session = AccountCommands(app, password_kdf=TEST_KDF).sign_up(f"{uuid.uuid4().hex[:8]}@example.com", "long enough")
    AccountCommands(app).grant_credits(session.account_id, CREDITS, "test", "operator")
    key = KeyCommands(app).create(session.account_id, "k", CREDITS // 2, None).key
    return session.account_id, key.id


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

    def hash_while_another_logs_in(password: str, params: ScryptParams) -> str:
        if not others:  # the first log-in has verified the legacy hash: another one completes meanwhile
            others.append(None)
            others[0] = commands.log_in(address, PASSWORD)
        return real_hash(password, params)

    monkeypatch.setattr(accounts_module, "hash_password", hash_while_another_logs_in)
    first = commands.log_in(address, PASSWORD)
    assert first.management_token and others and others[0].management_token != first.management_token
    assert topics(app, account.id).count("account.password_rehashed") == 1
    assert not needs_rehash(app.account(account.id).password_hash)


def test_the_operators_kdf_cost_makes_new_hashes_and_moves_old_ones_at_login(app, kdf_runs):
    """MESH_PASSWORD_KDF_LOG_N: sign-ups, password changes and the dummy verify run at the chosen cost; a hash
    made at another cost (here OWASP's default) still logs in and is rehashed at the chosen one."""
    cheap = ScryptParams(10, 8, 1)
    commands = AccountCommands(app, password_kdf=cheap)
    address = email()
    session = commands.sign_up(address, PASSWORD)
    assert app.account(session.account_id).password_hash.startswith("scrypt$ln=10,r=8,p=1$")
    with pytest.raises(BadCredentials):
        commands.log_in(email(), PASSWORD)  # no such account: the dummy hash costs what a real one does
    assert kdf_runs == [cheap, cheap]

    default = AccountCommands(app).sign_up(email(), PASSWORD)  # made at the default cost
    stored = app.account(default.account_id).password_hash
    assert stored.startswith("scrypt$ln=17,") and needs_rehash(stored, cheap)
    commands.log_in(app.account(default.account_id).email, PASSWORD)
    assert app.account(default.account_id).password_hash.startswith("scrypt$ln=10,")
    commands.change_password(session.account_id, PASSWORD, "another long password")
    assert app.account(session.account_id).password_hash.startswith("scrypt$ln=10,")


def topics(app: MeshApplication, aggregate_id: uuid.UUID) -> list[str]:
    return [stored.topic for stored in app.recorder.select_events(aggregate_id)]


def test_sign_up_is_atomic_and_emails_are_unique(app):
    commands = AccountCommands(app, password_kdf=TEST_KDF)
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    first = commands.sign_up(email, "long enough")
    head = app.recorder.max_notification_id()
    with pytest.raises(EmailTaken):
        commands.sign_up(email.upper(), "another password")
    assert app.recorder.max_notification_id() == head  # the losing account was not stored either
    again = commands.log_in(email, "long enough")
    assert again.account_id == first.account_id and again.management_token != first.management_token


def test_renaming_moves_the_name_and_archiving_frees_it(app):
    commands, account = TemplateCommands(app), uuid.uuid4()
    first = commands.create(account, "a", None, MESSAGES, None).template
    second = commands.create(account, "b", None, MESSAGES, None).template
    head = app.recorder.max_notification_id()
    with pytest.raises(TemplateNameTaken):
        commands.save(account, second.id, "a", None, MESSAGES, None)
    assert app.recorder.max_notification_id() == head  # nothing of the refused save was stored
    renamed = commands.save(account, first.id, "c", None, MESSAGES, None).template
    assert renamed.name == "c" and len(renamed.versions) == 2
    assert commands.save(account, second.id, "a", None, MESSAGES, None).template.name == "a"  # "a" was freed
    commands.archive(account, renamed.id)
    assert commands.create(account, "c", None, MESSAGES, None).template.id != renamed.id
    assert commands.create(uuid.uuid4(), "c", None, MESSAGES, None)  # names are per account


def test_settling_a_lease_the_account_alone_holds_settles_it_there(app, funded):
    """What a process that stopped between the two appends leaves, as the reaper settles it."""
    account_id, key_id = funded
    account: Account = app.repository.get(account_id)
    lease_id = uuid.uuid4()
    account.lease(lease_id, 5_000, key_id, datetime.now(timezone.utc) - timedelta(seconds=1))
    app.save(account)
    key_version = app.repository.get(key_id).version
    BudgetCommands(app).settle(account_id, key_id, lease_id, 0)
    account = app.repository.get(account_id)
    assert lease_id not in account.leases.open and account.leasable == CREDITS
    assert app.repository.get(key_id).version == key_version  # nothing to settle on the key


def test_a_suspended_account_cannot_log_in_nor_make_keys_until_resumed(app, funded):
    from domain.account import AccountSuspended

    account_id, _ = funded
    commands, keys = AccountCommands(app, password_kdf=TEST_KDF), KeyCommands(app)
    address = app.account(account_id).email
    assert commands.suspend(account_id, "abuse", "token") > 0
    assert commands.suspend(account_id, "again", "token") == 0  # suspended already: nothing appended
    with pytest.raises(AccountSuspended, match="suspended"):
        commands.log_in(address, "long enough")
    with pytest.raises(AccountSuspended):
        keys.create(account_id, "new", None, None)
    with pytest.raises(BadCredentials):  # a wrong password still says only that
        commands.log_in(address, "wrong password")
    commands.resume(account_id, "sorted out", "token")
    assert commands.log_in(address, "long enough").account_id == account_id
    assert keys.create(account_id, "new", None, None).key.label == "new"


def test_the_operator_role_is_given_and_taken_by_email(app):
    from commands.app import NotFound

    commands = AccountCommands(app, password_kdf=TEST_KDF)
    session = commands.sign_up(email(), "long enough")
    address = app.account(session.account_id).email
    account_id, position = commands.set_operator(address.upper(), True, "cli")
    assert account_id == session.account_id and position > 0 and app.account(account_id).operator
    assert commands.set_operator(address, True, "cli")[1] == 0  # already one
    commands.set_operator(address, False, "cli")
    assert not app.account(account_id).operator
    with pytest.raises(NotFound, match="sign up first"):
        commands.set_operator(email(), True, "cli")
