"""How current a read-model answer says it is: the last time its read model held every event there was, not the
time of the last event it applied (on a quiet server that can be hours ago)."""

from datetime import datetime, timedelta, timezone

from api.services.as_of import AsOf, joined

T = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def test_an_answer_is_current_as_of_the_last_check_at_the_streams_head():
    assert AsOf(7, T, T + timedelta(hours=3)).current_at == T + timedelta(hours=3)  # quiet since T
    assert AsOf(7, T, None).current_at == T  # never seen at the head (behind, or not since it moved)
    assert AsOf(7, T, T - timedelta(seconds=1)).current_at == T  # a check older than the event: the event
    assert AsOf(0, None, None).current_at is None


def test_an_answer_from_two_read_models_is_as_current_as_the_one_further_behind():
    ahead, behind = (9, T + timedelta(seconds=5), T + timedelta(seconds=9)), (7, T, T + timedelta(seconds=2))
    assert joined(ahead, behind) == AsOf(7, T, T + timedelta(seconds=2))
    assert joined(ahead, (8, T, None)) == AsOf(8, T, None)  # one never seen at the head: no check at all


def test_an_answer_from_one_read_model_is_as_current_as_it():  # what read_as_of gives for one read model
    for freshness in ((7, T, T + timedelta(hours=3)), (7, T, None), (0, None, None)):
        assert joined(freshness) == AsOf(*freshness)
