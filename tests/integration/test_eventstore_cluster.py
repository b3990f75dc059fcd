"""The event store on a replicated stream (a 3-node JetStream cluster, 3 replicas), where JetStream answers a
second append of a message id it holds with "duplicate" before it checks the expected sequence: a writer that
lost the race for an aggregate's version must still be refused, never told it won."""

from __future__ import annotations

import threading
import uuid

import pytest
from eventsourcing.persistence import IntegrityError

from commands.eventstore import JetStreamApplicationRecorder
from tests.integration.test_eventstore import stored
from tests.nats_cluster import NODES, cluster_url, running_cluster

WRITERS = 6


@pytest.fixture(scope="module")
def cluster_nats_url(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("nats-cluster")) as nodes:
        yield cluster_url(nodes)


@pytest.fixture
def replicated(cluster_nats_url, stream_name):
    recorder = JetStreamApplicationRecorder(cluster_nats_url, stream_name, replicas=NODES)
    yield recorder
    recorder.close()


def test_two_writers_to_one_aggregate_on_a_replicated_stream_exactly_one_wins(
    cluster_nats_url, stream_name, replicated
):
    aggregate = uuid.uuid4()
    replicated.insert_events([stored(aggregate, 1)])
    writers = [JetStreamApplicationRecorder(cluster_nats_url, stream_name) for _ in range(WRITERS)]
    outcomes: dict[int, str] = {}
    barrier = threading.Barrier(len(writers))

    def write(recorder: JetStreamApplicationRecorder, i: int) -> None:
        barrier.wait()
        try:
            recorder.insert_events([stored(aggregate, 2, state=b'{"writer": %d}' % i)])
            outcomes[i] = "won"
        except IntegrityError:
            outcomes[i] = "conflict"

    threads = [threading.Thread(target=write, args=(r, i)) for i, r in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for recorder in writers:
        recorder.close()
    assert sorted(outcomes.values()) == ["conflict"] * (WRITERS - 1) + ["won"]
    events = replicated.select_events(aggregate)
    assert [e.originator_version for e in events] == [1, 2]
    winner = next(i for i, outcome in outcomes.items() if outcome == "won")
    assert events[1].state == b'{"writer": %d}' % winner  # the one told it won is the one stored


def test_a_stale_writer_on_a_replicated_stream_is_refused(cluster_nats_url, stream_name, replicated):
    aggregate = uuid.uuid4()
    replicated.insert_events([stored(aggregate, 1)])
    other = JetStreamApplicationRecorder(cluster_nats_url, stream_name)
    try:
        other.insert_events([stored(aggregate, 2, state=b'{"writer": "other"}')])
    finally:
        other.close()
    with pytest.raises(IntegrityError):  # its cache still says version 1, and the version-2 message id is taken
        replicated.insert_events([stored(aggregate, 2, state=b'{"writer": "stale"}')])
    assert [e.state for e in replicated.select_events(aggregate)][1] == b'{"writer": "other"}'
