"""Use cases against the real event store: atomic sign-up, and concurrent writers retried to exact totals."""

from __future__ import annotations

import threading
import uuid

import pytest

from commands.accounts import AccountCommands, EmailTaken
from commands.app import MeshApplication
from domain.account import Account


def test_concurrent_grants_on_one_account_all_land_exactly_once(nats_url, stream_name, app):
    session = AccountCommands(app).sign_up(f"{uuid.uuid4().hex[:8]}@example.com", "long enough")
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


def test_sign_up_is_atomic_and_emails_are_unique(app):
    commands = AccountCommands(app)
    email = f"{uuid.uuid4().hex[:8]}@example.com"
    first = commands.sign_up(email, "long enough")
    head = app.recorder.max_notification_id()
    with pytest.raises(EmailTaken):
        commands.sign_up(email.upper(), "another password")
    assert app.recorder.max_notification_id() == head  # the losing account was not stored either
    again = commands.log_in(email, "long enough")
    assert again.account_id == first.account_id and again.management_token != first.management_token
