import pickle
import time
import uuid

from gateway.trace_ids import new_trace_id, uuid7


def test_trace_ids_are_version_7_with_the_time_in_milliseconds_first():
    before = time.time_ns() // 1_000_000
    ids = [new_trace_id() for _ in range(3000)]  # more than one os.urandom read
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for trace_id in ids:
        assert trace_id.version == 7 and trace_id.variant == uuid.RFC_4122
        assert before <= trace_id.int >> 80 <= after
    # ordered by time: a later millisecond sorts later (the index of every table keyed by trace id grows at its end)
    later = new_trace_id() if time.sleep(0.002) is None else None
    assert all(trace_id < later for trace_id in ids)


def test_trace_ids_keep_74_random_bits():
    ids = [new_trace_id().int for _ in range(2000)]
    random_bits = [(i >> 64 & 0xFFF) << 62 | i & ((1 << 62) - 1) for i in ids]
    seen = 0
    for value in random_bits:
        seen |= value
    assert seen == (1 << 74) - 1  # every random bit is set in some id (all 74 are used)


def test_a_trace_id_is_the_uuid_its_bits_make():
    made = uuid7(0x0123456789AB, (1 << 80) - 1)
    expected = uuid.UUID(int=made.int)
    assert made == expected and str(made) == str(expected) and hash(made) == hash(expected)
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert pickle.loads(pickle.dumps(made)) == expected
