"""Free models: a token bucket per account, refusing with 429 and Retry-After."""

from __future__ import annotations

import uuid

import pytest

from gateway.errors import GatewayError
from gateway.freelimit import FreeRateLimit


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_account_gets_its_requests_a_minute_then_a_429_saying_when_to_retry():
    clock = Clock()
    limit = FreeRateLimit(3, clock)
    key, other = uuid.uuid4(), uuid.uuid4()
    for _ in range(3):
        limit.admit(key, "mesh/echo")
    with pytest.raises(GatewayError) as refused:
        limit.admit(key, "mesh/echo")
    assert (refused.value.status, refused.value.code) == (429, "free_rate_limited")
    assert refused.value.headers == [(b"retry-after", b"20")]  # one request every 20 s at 3 a minute
    assert "3 requests a minute" in refused.value.message
    limit.admit(other, "mesh/echo")  # per account
    clock.now += 20
    limit.admit(key, "mesh/echo")  # refilled evenly
    with pytest.raises(GatewayError):
        limit.admit(key, "mesh/echo")


def test_zero_turns_the_limit_off():
    limit = FreeRateLimit(0, Clock())
    key = uuid.uuid4()
    for _ in range(1000):
        limit.admit(key, "mesh/echo")
