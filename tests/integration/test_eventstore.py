"""The JetStream event store against a real nats-server: eventsourcing's own recorder test cases,
plus concurrency and atomicity checks of our own."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.tests.persistence import AggregateRecorderTestCase, ApplicationRecorderTestCase

from commands import event_log
from commands.eventstore import JetStreamApplicationRecorder
from commands.recorder import JetStreamAggregateRecorder


CONSUMER_GONE_SECONDS = 15.0  # nats-server removes an ephemeral consumer some seconds after its interest is gone


@pytest.fixture(autouse=True)
def _servers(request, nats_url, stream_name):
    if request.instance is not None:
        request.instance.nats_url = nats_url
        request.instance.stream_name = stream_name


class TestAggregateRecorder(AggregateRecorderTestCase):
    def create_recorder(self) -> JetStreamAggregateRecorder:
        recorder = JetStreamAggregateRecorder(self.nats_url, self.stream_name)
        self.addCleanup(recorder.close)
        return recorder


class TestApplicationRecorder(ApplicationRecorderTestCase):
    def create_recorder(self) -> JetStreamApplicationRecorder:
        recorder = JetStreamApplicationRecorder(self.nats_url, self.stream_name)
        self.addCleanup(recorder.close)
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


def test_a_subscription_is_pushed_by_a_consumer_it_removes_when_stopped(recorder):
    """No polling: a subscription waits on a JetStream consumer of its own (the stream counts it) that pushes each
    append; stopped, it unsubscribes and the server removes the ephemeral consumer."""

    def consumers() -> int:
        return recorder._runner.run(event_log.info(recorder.nc, recorder.stream))["state"]["consumer_count"]

    event = StoredEvent(uuid.uuid4(), 1, "topic", b"{}")
    with recorder.subscribe(gt=recorder.max_notification_id()) as subscription:
        (position,) = recorder.insert_events([event])
        assert next(subscription).id == position
        assert consumers() == 1
    deadline = time.monotonic() + CONSUMER_GONE_SECONDS
    while consumers() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert consumers() == 0


@pytest.fixture
def recorder(nats_url, stream_name):
    r = JetStreamApplicationRecorder(nats_url, stream_name)
    yield r
    r.close()


def stored(originator_id, version, topic="t", state=b"{}"):
    return StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=state)


def test_two_writers_to_one_aggregate_exactly_one_wins(nats_url, stream_name, recorder):
    aggregate = uuid.uuid4()
    recorder.insert_events([stored(aggregate, 1)])
    writers = [JetStreamApplicationRecorder(nats_url, stream_name) for _ in range(8)]
    outcomes: list[str] = []
    barrier = threading.Barrier(len(writers))

    def write(r, i):
        barrier.wait()
        try:
            r.insert_events([stored(aggregate, 2, state=b'{"writer": %d}' % i)])
            outcomes.append("won")
        except IntegrityError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(r, i)) for i, r in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in writers:
        r.close()
    assert sorted(outcomes) == ["conflict"] * 7 + ["won"]
    assert [e.originator_version for e in recorder.select_events(aggregate)] == [1, 2]


def test_a_batch_with_one_stale_expectation_stores_nothing(recorder):
    a, b = uuid.uuid4(), uuid.uuid4()
    recorder.insert_events([stored(a, 1)])
    head = recorder.max_notification_id()
    with pytest.raises(IntegrityError):
        # b is new and fine, but a already has version 1
        recorder.insert_events([stored(b, 1), stored(b, 2), stored(a, 1)])
    assert recorder.max_notification_id() == head
    assert recorder.select_events(b) == []


def test_a_multi_aggregate_batch_is_stored_with_contiguous_positions(recorder):
    a, b = uuid.uuid4(), uuid.uuid4()
    ids = recorder.insert_events([stored(a, 1), stored(b, 1), stored(a, 2)])
    assert ids == list(range(ids[0], ids[0] + 3))
    notifications = recorder.select_notifications(ids[0], 10)
    assert [(n.id, n.originator_id, n.originator_version) for n in notifications] == [
        (ids[0], a, 1),
        (ids[0] + 1, b, 1),
        (ids[0] + 2, a, 2),
    ]


def test_a_stale_writer_whose_cache_is_behind_is_refused(nats_url, stream_name, recorder):
    aggregate = uuid.uuid4()
    recorder.insert_events([stored(aggregate, 1)])
    other = JetStreamApplicationRecorder(nats_url, stream_name)
    try:
        other.insert_events([stored(aggregate, 2)])  # the first recorder's cache still says version 1
    finally:
        other.close()
    with pytest.raises(IntegrityError):
        recorder.insert_events([stored(aggregate, 2)])


class Dog(Aggregate):
    def __init__(self, name: str):
        self.name = name
        self.tricks: list[str] = []

    def add_trick(self, trick: str) -> None:
        self._add_trick(trick)

    @event("TrickAdded")
    def _add_trick(self, trick: str) -> None:
        self.tricks.append(trick)


def test_an_application_round_trips_aggregates(nats_url, stream_name):
    app = Application(
        env={"PERSISTENCE_MODULE": "commands.eventstore", "MESH_NATS_URL": nats_url, "MESH_STREAM": stream_name}
    )
    try:
        dog = Dog("Fido")
        dog.add_trick("roll over")
        dog.add_trick("play dead")
        recordings = app.save(dog)
        assert [r.notification.id for r in recordings] == [1, 2, 3]
        again = app.repository.get(dog.id)
        assert again.name == "Fido" and again.tricks == ["roll over", "play dead"]
        assert again.version == 3
    finally:
        app.close()


def _cached_app(nats_url: str, stream_name: str) -> Application:
    """An application configured as MeshApplication configures its cache."""
    from commands.app import AGGREGATE_CACHE

    return Application(
        env={
            "PERSISTENCE_MODULE": "commands.eventstore",
            "MESH_NATS_URL": nats_url,
            "MESH_STREAM": stream_name,
            "AGGREGATE_CACHE_MAXSIZE": str(AGGREGATE_CACHE),
        }
    )


def test_a_cached_aggregate_reads_only_what_follows_it_and_sees_other_writers(nats_url, stream_name, monkeypatch):
    """Each use case gets the aggregate from the cache, brought up to date by reading the stream from after the
    cached version on, not the whole history; another process's writes are in it, and a save after them wins."""
    mine, theirs = _cached_app(nats_url, stream_name), _cached_app(nats_url, stream_name)
    try:
        dog = Dog("Fido")
        for i in range(50):
            dog.add_trick(f"trick {i}")
        mine.save(dog)
        assert len(mine.repository.get(dog.id).tricks) == 50  # cached from here on

        their_dog = theirs.repository.get(dog.id)
        their_dog.add_trick("from the other process")
        theirs.save(their_dog)

        reads: list[int] = []
        read_batch = event_log.read_batch

        async def counted(*args, **kwargs):
            messages, more = await read_batch(*args, **kwargs)
            reads.append(len(messages))
            return messages, more

        monkeypatch.setattr(event_log, "read_batch", counted)
        again = mine.repository.get(dog.id)
        assert again.tricks[-1] == "from the other process" and again.version == 52
        assert reads == [1]  # the one event appended since, not 52

        again.add_trick("mine again")
        mine.save(again)  # not refused: the cached copy was brought up to date first
        assert theirs.repository.get(dog.id).tricks[-2:] == ["from the other process", "mine again"]
    finally:
        mine.close()
        theirs.close()


def test_the_mesh_application_caches_and_fast_forwards_its_aggregates(nats_url, stream_name):
    from commands.app import MeshApplication

    app = MeshApplication(nats_url, stream_name)
    try:
        assert app.repository.cache is not None and app.repository.fastforward
    finally:
        app.close()
