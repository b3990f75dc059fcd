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
    started = time.perf_counter_ns()
    try:
        answer = await call(models[0])
    except GatewayError as error:
        return await _after_failure(models, call, attempts, error, started, failed, sleep)
    return models[0], answer


async def _after_failure(
    models: list[Model],
    call: Callable[[Model], Awaitable[T]],
    attempts: list[Attempt],
    error: GatewayError,
    started: int,
    failed: Callable[[Model, GatewayError], None] = lambda model, error: None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[Model, T]:
    """Once the first call (of `models[0]`, begun at `started`, `time.perf_counter_ns()`) has failed with `error`:
    the same model again, then the next ones, as the module says."""
    index, retry = 0, 0
    while True:
        model = models[index]
        attempts.append(Attempt(model.id, error.status, _ms_since(started)))
        last_model = index == len(models) - 1
        if not error.retryable or (last_model and retry == ATTEMPTS_PER_MODEL - 1):
            raise error
        failed(model, error)
        wait = None if retry == ATTEMPTS_PER_MODEL - 1 else backoff(retry + 1, error.retry_after)
        if wait is None:  # the next model (none left: the last failure is the answer)
            if last_model:
                raise error
            index, retry = index + 1, 0
        else:
            await sleep(wait)
            retry += 1
        started = time.perf_counter_ns()
        try:
            answer = await call(models[index])
        except GatewayError as failure:
            error = failure
            continue
        attempts.append(Attempt(models[index].id, 200, _ms_since(started)))
        return models[index], answer


def _ms_since(started: int) -> int:
    return (time.perf_counter_ns() - started) // 1_000_000
