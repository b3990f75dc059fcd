"""The retry and fallback policy: what is tried again, how long it waits, and in which order models are tried."""

from __future__ import annotations

import asyncio

import pytest

from domain.pricing import Price
from domain.usage import Attempt
from gateway import fallbacks
from gateway.catalog import Model, Provider
from gateway.errors import GatewayError
from gateway.fallbacks import ATTEMPTS_PER_MODEL, RETRY_AFTER_CAP, backoff, first_answer
from gateway.providers.upstream_errors import retry_after, upstream_error, upstream_timeout, upstream_unreachable
from gateway.transport import UpstreamUnreachable

ACME = Provider(name="acme", kind="openai", base_url="http://127.0.0.1:9/v1")
A = Model("acme/a", "acme", "a", Price(1, 1))
B = Model("acme/b", "acme", "b", Price(2, 2))


class Upstream:
    """Answers each call with the next of `outcomes` (an exception is raised)."""

    def __init__(self, *outcomes: object):
        self.outcomes = list(outcomes)
        self.calls = 0

    async def __call__(self) -> object:
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run(upstreams: list[tuple[Model, Upstream]], attempts, waits=None):
    """first_answer over the models of `upstreams`, each called through its own Upstream."""
    by_id = {model.id: upstream for model, upstream in upstreams}

    async def sleep(seconds: float) -> None:
        if waits is not None:
            waits.append(seconds)

    def call(model: Model):
        return by_id[model.id]()

    return asyncio.run(first_answer([model for model, _ in upstreams], call, attempts, sleep=sleep))


def test_429_5xx_unreachable_and_timeouts_are_retryable_other_4xx_are_not():
    for status in (429, 500, 502, 503, 529):
        assert upstream_error(ACME, status, "busy").retryable, status
    for status in (400, 401, 403, 404, 413, 422):
        assert not upstream_error(ACME, status, "bad").retryable, status
    assert upstream_timeout(ACME).retryable
    assert upstream_unreachable(ACME, UpstreamUnreachable("no")).retryable


def test_retry_after_is_read_in_seconds_or_milliseconds():
    assert retry_after([(b"Retry-After", b"1.5")]) == 1.5
    assert retry_after([(b"retry-after-ms", b"250")]) == 0.25
    assert retry_after([(b"retry-after", b"Wed, 21 Oct 2015 07:28:00 GMT")]) is None
    assert retry_after([]) is None
    assert upstream_error(ACME, 429, "slow down", [(b"retry-after", b"2")]).retry_after == 2.0


def test_backoff_is_short_jittered_and_honours_retry_after_up_to_a_cap():
    waits = {backoff(1, None) for _ in range(50)}
    assert len(waits) > 1 and all(fallbacks.BACKOFF_SECONDS / 2 <= w <= fallbacks.BACKOFF_SECONDS for w in waits)
    assert all(backoff(10, None) <= fallbacks.BACKOFF_CAP for _ in range(20))
    assert backoff(1, 0.5) == 0.5
    assert backoff(1, RETRY_AFTER_CAP + 1) is None  # longer than worth waiting: the next model instead


def test_a_retryable_failure_is_retried_on_the_same_model_then_the_next_model_answers():
    first = Upstream(upstream_error(ACME, 503, "down"), upstream_error(ACME, 503, "down"))
    second = Upstream("answer")
    attempts: list[Attempt] = []
    waits: list[float] = []
    answered, answer = run([(A, first), (B, second)], attempts, waits)
    assert (answered, answer) == (B, "answer")
    assert first.calls == ATTEMPTS_PER_MODEL and second.calls == 1
    assert [(a.model, a.status) for a in attempts] == [("acme/a", 502), ("acme/a", 502), ("acme/b", 200)]
    assert len(waits) == ATTEMPTS_PER_MODEL - 1  # a wait between calls of one model, none before the next model


def test_a_first_call_that_answers_leaves_no_attempts():
    attempts: list[Attempt] = []
    assert run([(A, Upstream("answer")), (B, Upstream())], attempts)[1] == "answer"
    assert attempts == []


def test_a_429_is_retried_on_the_same_model_after_its_retry_after():
    upstream = Upstream(upstream_error(ACME, 429, "slow", [(b"retry-after", b"0.3")]), "answer")
    attempts: list[Attempt] = []
    waits: list[float] = []
    answered, answer = run([(A, upstream)], attempts, waits)
    assert (answered, answer, waits) == (A, "answer", [0.3])
    assert [a.status for a in attempts] == [429, 200]


def test_a_long_retry_after_moves_on_to_the_next_model_without_waiting():
    first = Upstream(upstream_error(ACME, 429, "slow", [(b"retry-after", b"60")]))
    waits: list[float] = []
    answered, _ = run([(A, first), (B, Upstream("ok"))], [], waits)
    assert answered == B and first.calls == 1 and waits == []


def test_a_bad_request_is_not_retried_nor_sent_to_a_fallback():
    bad = upstream_error(ACME, 400, "prompt too long")
    second = Upstream("answer")
    attempts: list[Attempt] = []
    with pytest.raises(GatewayError) as raised:
        run([(A, Upstream(bad)), (B, second)], attempts)
    assert raised.value is bad and second.calls == 0 and [a.status for a in attempts] == [400]


def test_when_every_model_fails_the_last_failure_is_raised_after_every_attempt():
    last = upstream_error(ACME, 529, "overloaded")
    first = Upstream(*[upstream_error(ACME, 500, "x")] * ATTEMPTS_PER_MODEL)
    second = Upstream(*[upstream_error(ACME, 500, "x")] * (ATTEMPTS_PER_MODEL - 1), last)
    attempts: list[Attempt] = []
    with pytest.raises(GatewayError) as raised:
        run([(A, first), (B, second)], attempts)
    assert raised.value is last and len(attempts) == 2 * ATTEMPTS_PER_MODEL
    assert attempts[-1].model == "acme/b"
