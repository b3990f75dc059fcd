"""The rules of key rate limits (gateway/key_rate.py) on an in-memory store with the compare-and-set semantics
of the NATS key-value bucket; the real bucket across two gateway processes is tests/e2e/test_key_rate_limits.py."""

import asyncio
import uuid

import pytest

from gateway.admission import KeyInfo
from gateway.errors import GatewayError
from gateway.key_rate import Conflict, KeyRates, duration, window_of

MINUTE_START = 1_800_000_000 // 60 * 60  # a UTC minute's first second


class MemoryWindows:
    """Counters with revisions, as the bucket keeps them; every call yields, so concurrent admissions interleave
    (and conflict) as they do over the network."""

    def __init__(self):
        self.entries: dict[str, tuple[int, int, int]] = {}
        self.revision = 0
        self.writes = 0

    async def read(self, name):
        await asyncio.sleep(0)
        return self.entries.get(name, (0, 0, 0))

    async def write(self, name, requests, tokens, revision):
        await asyncio.sleep(0)
        if self.entries.get(name, (0, 0, 0))[2] != revision:
            raise Conflict(name)
        self.revision += 1
        self.writes += 1
        self.entries[name] = (requests, tokens, self.revision)
        return self.revision


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def key(rpm=None, tpm=None) -> KeyInfo:
    return KeyInfo(uuid.uuid4(), uuid.uuid4(), None, "active", None, rpm_limit=rpm, tpm_limit=tpm)


async def outcome(rates: KeyRates, k: KeyInfo, tokens: int = 0):
    try:
        return await rates.admit(k, lambda: tokens)
    except GatewayError as exc:
        return exc


def test_a_key_without_limits_touches_no_counter():
    rates = KeyRates(None)  # no store at all: any use of it would be a 503
    assert asyncio.run(rates.admit(key(), lambda: 1 / 0)) is None


def test_no_more_than_rpm_limit_are_admitted_in_a_minute_across_processes_and_the_rest_are_told_when():
    store, clock = MemoryWindows(), Clock(MINUTE_START + 45.2)
    gateways = [KeyRates(store, clock), KeyRates(store, clock)]  # two processes, one bucket
    k = key(rpm=7)

    async def run():
        return await asyncio.gather(*(outcome(gateways[i % 2], k) for i in range(21)))

    results = asyncio.run(run())
    admitted = [r for r in results if not isinstance(r, GatewayError)]
    refused = [r for r in results if isinstance(r, GatewayError)]
    assert len(admitted) == 7 and len(refused) == 14
    assert sorted(r.requests_used for r in admitted) == list(range(1, 8))
    for r in refused:
        assert (r.status, r.code, r.type) == (429, "key_rpm_limit", "rate_limit_error")
        headers = dict(r.headers)
        assert headers[b"retry-after"] == b"15"  # 14.8 s to the minute's end, rounded up
        assert headers[b"x-ratelimit-remaining-requests"] == b"0"
        assert headers[b"x-ratelimit-limit-requests"] == b"7"
        assert "7 requests a minute (rpm_limit" in r.message
    clock.now = MINUTE_START + 60  # the next minute: a fresh allowance
    again = asyncio.run(outcome(gateways[0], k))
    assert not isinstance(again, GatewayError) and again.requests_used == 1


def test_one_process_admits_with_one_write_per_request_while_no_other_writes():
    store, clock = MemoryWindows(), Clock(MINUTE_START + 1)
    rates, k = KeyRates(store, clock), key(rpm=100)

    async def run():
        for _ in range(10):
            await rates.admit(k, lambda: 0)

    asyncio.run(run())
    assert store.writes == 10
    assert next(iter(store.entries.values()))[:2] == (10, 0)


def test_tokens_are_admitted_on_the_bound_and_trued_up_to_the_usage():
    store, clock = MemoryWindows(), Clock(MINUTE_START + 10)
    rates, k = KeyRates(store, clock), key(tpm=1000)

    async def run():
        first = await rates.admit(k, lambda: 600)
        assert dict(first.headers())[b"x-ratelimit-remaining-tokens"] == b"400"
        refused = await outcome(rates, k, 600)
        assert (refused.status, refused.code) == (429, "key_tpm_limit")
        assert dict(refused.headers)[b"retry-after"] == b"50"
        rates.settle(first, 150)  # it used 150 of its 600
        await asyncio.gather(*rates._tasks)
        second = await rates.admit(k, lambda: 600)  # 150 + 600 fit now
        assert second.tokens_used == 750

    asyncio.run(run())


def test_a_request_larger_than_the_whole_tpm_limit_is_refused_without_counting():
    store = MemoryWindows()
    refused = asyncio.run(outcome(KeyRates(store), key(tpm=100), 101))
    assert (refused.status, refused.code) == (429, "key_tpm_limit")
    assert "can never be admitted" in refused.message and store.writes == 0


def test_a_true_up_after_its_minute_changes_nothing():
    store, clock = MemoryWindows(), Clock(MINUTE_START + 59)
    rates, k = KeyRates(store, clock), key(tpm=1000)

    async def run():
        use = await rates.admit(k, lambda: 500)
        clock.now += 2
        rates.settle(use, 10)
        await asyncio.gather(*rates._tasks)

    asyncio.run(run())
    assert store.writes == 1


def test_a_refusal_seen_from_memory_is_checked_afresh_first():
    """Another process trued the tokens down: the count this process remembers is too high to refuse on."""
    store, clock = MemoryWindows(), Clock(MINUTE_START + 5)
    a, b, k = KeyRates(store, clock), KeyRates(store, clock), key(tpm=1000)

    async def run():
        await a.admit(k, lambda: 400)
        use = await b.admit(k, lambda: 500)
        b.settle(use, 0)
        await asyncio.gather(*b._tasks)
        return await a.admit(k, lambda: 500)  # a remembers 400 (b's 500 unseen); the store holds 400

    assert asyncio.run(run()).tokens_used == 900


def test_no_store_with_limits_is_a_503_never_an_unchecked_admission():
    refused = asyncio.run(outcome(KeyRates(None), key(rpm=5)))
    assert (refused.status, refused.code) == (503, "service_unavailable")


@pytest.mark.parametrize("seconds, text", [(0.0004, "1ms"), (0.02, "20ms"), (1, "1s"), (6.5, "6.5s"), (59.9991, "60s")])
def test_reset_durations_are_written_as_openai_writes_them(seconds, text):
    assert duration(seconds) == text


def test_the_window_is_the_utc_minute():
    assert window_of(MINUTE_START + 59.5) == (MINUTE_START // 60, 0.5)
    assert window_of(MINUTE_START + 60)[0] == MINUTE_START // 60 + 1


def test_concurrent_requests_of_one_key_in_one_process_share_writes():
    store, clock = MemoryWindows(), Clock(MINUTE_START + 1)
    rates, k = KeyRates(store, clock), key(rpm=15)

    async def run():
        return await asyncio.gather(*(outcome(rates, k) for _ in range(40)))

    results = asyncio.run(run())
    admitted = [r for r in results if not isinstance(r, GatewayError)]
    assert sorted(r.requests_used for r in admitted) == list(range(1, 16))
    assert store.writes < 15  # batched: fewer writes than requests admitted
    assert all(r.code == "key_rpm_limit" for r in results if isinstance(r, GatewayError))


def test_a_cancelled_request_leaves_the_others_of_its_batch_to_the_next_write():
    store, clock = MemoryWindows(), Clock(MINUTE_START + 1)
    rates, k = KeyRates(store, clock), key(rpm=5)

    async def run():
        first = asyncio.create_task(outcome(rates, k))
        others = [asyncio.create_task(outcome(rates, k)) for _ in range(3)]
        await asyncio.sleep(0)
        first.cancel()
        return await asyncio.gather(*others)

    results = asyncio.run(run())
    assert all(not isinstance(r, GatewayError) for r in results)
