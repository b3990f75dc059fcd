"""Use cases against the real event store: concurrent writers retried to exact totals. (Atomic sign-up, on either
event store: tests/unit/test_command_contract.py.)"""

from __future__ import annotations

import threading
import uuid

from commands.accounts import AccountCommands
from commands.app import MeshApplication
from domain.account import Account

from tests.conftest import TEST_KDF


def test_concurrent_grants_on_one_account_all_land_exactly_once(nats_url, stream_name, app):
    session = AccountCommands(app, password_kdf=TEST_KDF).sign_up(f"{uuid.uuid4().hex[:8]}@example.com", "long enough")
    apps = [MeshApplication(nats_url, stream_name) for _ in range(4)]
    errors: list[Exception] = []
    barrier = threading.Barrier(len(apps) * 5)

    def grant(application: MeshApplication) -> None:
        barrier.wait()
        try:
            AccountCommands(application).grant_credits(session.account_id, 1_000, "test", "operator")
        except Exception as exc:  # a Conflict here would mean retries ran out
            errors.append(exc)

    threads = [threading.Thread(target=grant, args=(a,)) for a in apps for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()
    account: Account = app.repository.get(session.account_id)
    assert errors == []
    assert account.credits == 20 * 1_000
    assert account.version == 1 + 20
