"""Retries and fallbacks: which upstream failures are tried again, how long to wait, and which models to try.

A request is served by the first of its candidates that answers: its model, then its fallbacks (the request's
`models` list when it sends one, else the model's `fallbacks` in mesh.toml; a fallback's own fallbacks are not
followed). Each candidate gets ATTEMPTS_PER_MODEL calls when it fails with a 429, a 5xx (Anthropic's 529
included), no connection or no answer in time (`GatewayError.retryable`), with a short jittered back-off between
them (the upstream's Retry-After, when it sends one, up to RETRY_AFTER_CAP). Any other failure (a 4xx: the
request itself is wrong) ends the request at once. Only failures before the answer begins are tried again: once
a stream's first byte has gone to the client, it is never retried.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Awaitable, Callable, TypeVar

from domain.usage import Attempt
from gateway.catalog import Model
from gateway.errors import GatewayError

MAX_FALLBACKS = 4  # models after the first, in mesh.toml's `fallbacks` or a request's `models` (beyond its model)
ATTEMPTS_PER_MODEL = 2  # calls of one model before the next is tried
BACKOFF_SECONDS = 0.2  # the first wait before calling the same model again; doubled each time, jittered
BACKOFF_CAP = 1.0  # the longest wait Mesh chooses itself
RETRY_AFTER_CAP = 2.0  # the longest an upstream's Retry-After is honoured (a longer one: the next model instead)

T = TypeVar("T")


def backoff(retry: int, retry_after: float | None) -> float | None:
    """Seconds to wait before the `retry`th call again of the same model (1: the first retry); None when the
    upstream asks for longer than RETRY_AFTER_CAP (it is not worth waiting for: the next model is tried)."""
    if retry_after is not None:
        return retry_after if retry_after <= RETRY_AFTER_CAP else None
    wait = min(BACKOFF_SECONDS * 2.0 ** (retry - 1), BACKOFF_CAP)
    return wait / 2 + random.uniform(0, wait / 2)  # "equal jitter": never nothing, never in lockstep


async def first_answer(
    models: list[Model],
    call: Callable[[Model], Awaitable[T]],
    attempts: list[Attempt],
    failed: Callable[[Model, GatewayError], None] = lambda model, error: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Model, T]:
    """Call the models in turn (`call(model)`: a front door's call of one) until one answers: that model and
    its answer. Every call is added to `attempts`, once there was more than one (a first call that answers
    leaves it empty); `failed` hears of each failure that is tried again. Raises the last failure when none
    answers, or the first that is not retryable."""
    last: GatewayError | None = None
    for index, model in enumerate(models):
        for retry in range(ATTEMPTS_PER_MODEL):
            started = time.perf_counter_ns()
            try:
                answer = await call(model)
            except GatewayError as error:
                attempts.append(Attempt(model.id, error.status, _ms_since(started)))
                if not error.retryable:
                    raise
                last = error
                if index == len(models) - 1 and retry == ATTEMPTS_PER_MODEL - 1:
                    raise
                failed(model, error)
                if retry == ATTEMPTS_PER_MODEL - 1:
                    break
                wait = backoff(retry + 1, error.retry_after)
                if wait is None:
                    break
                await sleep(wait)
                continue
            if attempts:
                attempts.append(Attempt(model.id, 200, _ms_since(started)))
            return model, answer
    assert last is not None
    raise last


def _ms_since(started: int) -> int:
    return (time.perf_counter_ns() - started) // 1_000_000
