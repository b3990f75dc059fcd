"""Snapshots on a real nats-server: after a restart, an account and a key with a long lease history are loaded
from their latest snapshot and the events after it only, to exactly the state the writer had; an unreadable
snapshot falls back to the whole history."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import nats
import pytest

from commands.accounts import AccountCommands
from commands.app import MeshApplication
from commands.leasing import BudgetCommands
from commands.keys import KeyCommands
from commands.snapshots import SNAPSHOT_INTERVAL
from commands.stream import snapshots_stream
from domain.account import Account
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, snapshot_subject

from tests.conftest import TEST_KDF

CYCLES = SNAPSHOT_INTERVAL // 2 + 7  # a lease and its settlement: two events on each aggregate


@pytest.fixture
def history(nats_url, stream_name):
    """An account and a key that went through CYCLES lease cycles, and the state their writer ended with."""
    app = MeshApplication(nats_url, stream_name)
    try:
        session = AccountCommands(app, password_kdf=TEST_KDF).sign_up(
            f"s{os.getpid()}@example.com", "correct horse battery staple"
        )
        account = app.account(session.account_id)
        account.grant_credits(10**15, "test", "test")
        app.save(account)
        key_id = KeyCommands(app).create(session.account_id, "k", None, None).key.id
        budget = BudgetCommands(app)
        for spent in range(CYCLES):
            lease = budget.lease(session.account_id, key_id, 10**9, 1, timedelta(seconds=60))
            budget.settle(session.account_id, key_id, lease.lease_id, spent)
        states = {i: _state(app.repository.get(i)) for i in (session.account_id, key_id)}
    finally:
        app.close()
    return session.account_id, key_id, states


def _state(aggregate) -> dict:
    return {name: value for name, value in vars(aggregate).items() if name != "_pending_events"}


def _count_reads(app: MeshApplication) -> list[int]:
    """How many events each read of an aggregate's events returned (the recorder's own method, wrapped)."""
    counts: list[int] = []
    recorder = app.recorder
    read = recorder._events_of

    async def counted(key, after=0):
        found = await read(key, after)
        counts.append(len(found))
        return found

    recorder._events_of = counted  # type: ignore[method-assign]
    return counts


def test_a_restart_loads_the_snapshot_and_only_the_events_after_it(nats_url, stream_name, history):
    account_id, key_id, states = history
    app = MeshApplication(nats_url, stream_name)
    try:
        reads = _count_reads(app)
        for aggregate_id, state in states.items():
            loaded = app.repository.get(aggregate_id)
            assert loaded.version > SNAPSHOT_INTERVAL
            assert _state(loaded) == state
        # both were snapshotted at SNAPSHOT_INTERVAL; only the events since were read
        assert reads and all(count <= states[account_id]["_version"] - SNAPSHOT_INTERVAL for count in reads), reads
        # and the loaded copies go on: a lease and its settlement on top of them
        budget = BudgetCommands(app)
        lease = budget.lease(account_id, key_id, 10**9, 1, timedelta(seconds=60))
        budget.settle(account_id, key_id, lease.lease_id, 1)
        assert app.account(account_id).leases.settled == sum(range(CYCLES)) + 1
    finally:
        app.close()
    assert asyncio.run(_messages(nats_url, snapshots_stream(stream_name))) == 2  # the latest of each, kept


def test_an_unreadable_snapshot_falls_back_to_the_whole_history(nats_url, stream_name, history):
    account_id, key_id, states = history
    version = states[account_id]["_version"] - 1
    asyncio.run(
        _publish(
            nats_url,
            snapshot_subject(stream_name, account_id),
            b'{"email": "from an older Mesh"}',
            {
                HEADER_TOPIC: "snapshot.account",
                HEADER_ORIGINATOR_ID: str(account_id),
                HEADER_ORIGINATOR_VERSION: str(version),
            },
        )
    )
    app = MeshApplication(nats_url, stream_name)
    try:
        reads = _count_reads(app)
        account = app.repository.get(account_id)
        assert isinstance(account, Account)
        assert _state(account) == states[account_id]
        assert sum(reads) == states[account_id]["_version"]  # every event, from the first
    finally:
        app.close()


def test_a_snapshot_the_log_does_not_hold_is_not_used(nats_url, stream_name, history):
    """As after restoring the log from an older backup beside newer snapshots: the snapshot names a version the
    log does not have where the snapshot says."""
    account_id, key_id, states = history
    ahead = asyncio.run(_last(nats_url, snapshots_stream(stream_name), snapshot_subject(stream_name, account_id)))
    headers = {**ahead.headers, HEADER_ORIGINATOR_VERSION: str(states[account_id]["_version"] + 50)}
    headers = {name: value for name, value in headers.items() if not name.startswith("Nats-")}
    asyncio.run(_publish(nats_url, snapshot_subject(stream_name, account_id), ahead.data, headers))
    app = MeshApplication(nats_url, stream_name)
    try:
        reads = _count_reads(app)
        assert _state(app.repository.get(account_id)) == states[account_id]
        assert sum(reads) == states[account_id]["_version"]
    finally:
        app.close()


async def _last(url: str, stream: str, subject: str):
    nc = await nats.connect(url)
    try:
        return await nc.jetstream().get_last_msg(stream, subject)
    finally:
        await nc.close()


async def _publish(url: str, subject: str, body: bytes, headers: dict[str, str]) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().publish(subject, body, headers=headers)
    finally:
        await nc.close()


async def _messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()
