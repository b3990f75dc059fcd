"""Requests and tokens a minute per API key (`rpm_limit`, `tpm_limit`), held across every gateway process.

The window is the UTC minute, [hh:mm:00, hh:mm+1:00), by the clock of the process admitting the request: a
request counts in the minute in which it is decided (its counter write prepared). One counter per key and
minute lives in a NATS JetStream key-value bucket (`<stream>_KEY_RATES`, in memory, entries gone after
WINDOW_TTL): the requests and tokens admitted so far. A request is admitted by a compare-and-set of that entry
(a publish expecting the entry's last revision), so however many processes admit at once, no more than
`rpm_limit` requests and `tpm_limit` tokens are admitted in one window. A process remembers the entry it last
wrote and its revision: while no other process writes the key's counter, admitting is one NATS round trip;
when one did, the compare-and-set fails, the entry is read afresh and the request tried again (at most
MAX_ATTEMPTS times). Requests of one key in one process do not race each other: those arriving while a write
is out wait for the next one, which admits them all (as many as fit, in order) at once.

Tokens: a request is admitted on its bound (prompt bound plus completion limit, per choice), and its count is
trued up to its real usage once that is known (off the request's path; not after its minute is over).

A key without limits costs nothing here. With NATS unreachable, a key with limits is answered 503 (never
admitted unchecked).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import datetime, timezone
from typing import Callable, Protocol
from uuid import UUID

import msgspec
from nats.aio.client import Client as NATS
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from gateway.admission import KeyInfo
from gateway.catalog import Model
from gateway.errors import GatewayError

log = logging.getLogger("mesh.gateway")

WINDOW_SECONDS = 60  # the UTC minute
WINDOW_TTL = 2 * WINDOW_SECONDS  # how long a window's counter is kept (then NATS drops it)
MAX_ATTEMPTS = 32  # compare-and-sets one batch tries before it gives up (a 503)
MAX_REMEMBERED = 100_000  # counters remembered at once (then forgotten, and read again when needed)
STORE_SECONDS = 2.0  # how long one read or write of a counter may take


class Conflict(Exception):
    """Another process wrote the counter since the revision given."""


class WindowStore(Protocol):
    """Counters of requests and tokens by name, each written only over the revision last read (0: none yet)."""

    async def read(self, name: str) -> tuple[int, int, int]:
        """(requests, tokens, revision); (0, 0, 0) when there is no counter yet."""

    async def write(self, name: str, requests: int, tokens: int, revision: int) -> int:
        """Write over `revision` (0: create), returning the new revision, or raise Conflict."""


class RateUse:
    """What one request took of its key's window: for its answer's headers and its true-up."""

    __slots__ = ("key_id", "window", "tokens", "rpm_limit", "tpm_limit", "requests_used", "tokens_used", "reset")

    def __init__(self, key: KeyInfo, window: int, tokens: int, requests_used: int, tokens_used: int, reset: float):
        self.key_id, self.window, self.tokens = key.key_id, window, tokens
        self.rpm_limit, self.tpm_limit = key.rpm_limit, key.tpm_limit
        self.requests_used, self.tokens_used, self.reset = requests_used, tokens_used, reset

    def headers(self) -> list[tuple[bytes, bytes]]:
        return limit_headers(self.rpm_limit, self.tpm_limit, self.requests_used, self.tokens_used, self.reset)


def limit_headers(
    rpm_limit: int | None, tpm_limit: int | None, requests_used: int, tokens_used: int, reset: float
) -> list[tuple[bytes, bytes]]:
    """OpenAI's x-ratelimit-* headers for the limits the key has: the limit, what is left of it in this
    window, and when the window resets (a duration such as `12.5s` or `800ms`)."""
    headers = []
    for what, limit, used in (("requests", rpm_limit, requests_used), ("tokens", tpm_limit, tokens_used)):
        if limit is not None:
            headers += [
                (f"x-ratelimit-limit-{what}".encode(), str(limit).encode()),
                (f"x-ratelimit-remaining-{what}".encode(), str(max(0, limit - used)).encode()),
                (f"x-ratelimit-reset-{what}".encode(), duration(reset).encode()),
            ]
    return headers


def duration(seconds: float) -> str:
    """A duration as OpenAI writes one in x-ratelimit-reset-*: `20ms`, `1s`, `6.5s`."""
    ms = max(1, math.ceil(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    return f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"


def window_of(now: float) -> tuple[int, float]:
    """The UTC minute `now` (Unix seconds) falls in, as its number, and the seconds until it ends."""
    window = int(now // WINDOW_SECONDS)
    return window, (window + 1) * WINDOW_SECONDS - now


def refusal(
    key: KeyInfo, what: str, used: int, asked: int, window: int, reset: float, headers: list[tuple[bytes, bytes]]
) -> GatewayError:
    """429 naming the limit (key_rpm_limit or key_tpm_limit), with Retry-After: the seconds to the window's end."""
    limit, unit, code = (
        (key.rpm_limit, "requests", "key_rpm_limit") if what == "rpm" else (key.tpm_limit, "tokens", "key_tpm_limit")
    )
    start = datetime.fromtimestamp(window * WINDOW_SECONDS, timezone.utc).strftime("%H:%M")
    retry = max(1, math.ceil(reset))
    detail = (
        f"{used} admitted in this minute, and this request needs {asked}"
        if what == "tpm"
        else f"{used} admitted in this minute"
    )
    return GatewayError(
        429,
        f"this API key is limited to {limit} {unit} a minute ({what}_limit; UTC minutes, this one from {start}): "
        f"{detail}; retry in {retry}s, when the next minute starts",
        "rate_limit_error",
        code,
        headers=[(b"retry-after", str(retry).encode()), *headers],
    )


class _Seen:
    __slots__ = ("window", "requests", "tokens", "revision")

    def __init__(self, window: int, requests: int, tokens: int, revision: int):
        self.window, self.requests, self.tokens, self.revision = window, requests, tokens, revision


class _Item:
    """One request of `key` waiting to be admitted (`future` set), or one true-up of `tokens` (a difference) in
    `window`."""

    __slots__ = ("key_id", "key", "tokens", "future", "window")

    def __init__(
        self, key_id: UUID, key: KeyInfo | None, tokens: int, future: asyncio.Future | None = None, window: int = 0
    ):
        self.key_id, self.key, self.tokens, self.future, self.window = key_id, key, tokens, future, window


class KeyRates:
    """The gateway's admission by key rate: `admit` before a request goes upstream, `settle` when its usage is
    known. A key's requests in one process are admitted in batches: while one compare-and-set is out, the ones
    arriving queue, and the next admits them all (as many as fit, in order) with one write."""

    def __init__(self, store: WindowStore | None, clock: Callable[[], float] = time.time):
        self.store = store  # None: no NATS (a key with limits is then answered 503)
        self.clock = clock
        self._seen: dict[UUID, _Seen] = {}  # the counter each key last wrote here, with its revision
        self._queues: dict[UUID, list[_Item]] = {}  # what waits for the key's next write
        self._draining: set[UUID] = set()  # keys whose queue is being written
        self._tasks: set[asyncio.Task] = set()

    async def admit(self, key: KeyInfo, tokens: Callable[[], int]) -> RateUse | None:
        """Count one request of `key`, and `tokens()` tokens when it has a tpm_limit, in this minute's window;
        or raise a 429 naming the limit it would pass. None for a key without limits."""
        if not limited(key):
            return None
        asked = tokens() if key.tpm_limit is not None else 0
        if key.tpm_limit is not None and asked > key.tpm_limit:
            raise GatewayError(
                429,
                f"this request may use up to {asked} tokens (its prompt bound plus its completion limit), more than "
                f"this API key's limit of {key.tpm_limit} tokens a minute (tpm_limit): it can never be admitted; "
                "send a lower max_tokens or a shorter prompt, or raise the key's tpm_limit",
                "rate_limit_error",
                "key_tpm_limit",
            )
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue(_Item(key.key_id, key, asked, future))
        if key.key_id not in self._draining:
            await self._drain(key.key_id, future)  # this request writes the batch it is in (and maybe others)
        return await future

    def settle(self, use: RateUse | None, tokens: int) -> None:
        """The request used `tokens` in all: its window's count goes from its bound to that (in the background,
        while its window lasts)."""
        if use is None or use.tpm_limit is None or tokens == use.tokens:
            return
        self._queue(_Item(use.key_id, None, tokens - use.tokens, window=use.window))
        if use.key_id not in self._draining:
            self._spawn(use.key_id)

    def _queue(self, item: _Item) -> None:
        self._queues.setdefault(item.key_id, []).append(item)

    def _spawn(self, key_id: UUID) -> None:
        task = asyncio.create_task(self._drain(key_id, None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, key_id: UUID, own: asyncio.Future | None) -> None:
        """Write the key's queued batches until `own` is answered (None: until the queue is empty); what
        arrives later is left to a task of its own, so no request waits on others' batches for long."""
        self._draining.add(key_id)
        try:
            while (own is None or not own.done()) and (batch := self._queues.pop(key_id, None)):
                await self._write_batch(key_id, batch)
        finally:
            self._draining.discard(key_id)
            if key_id in self._queues:
                self._spawn(key_id)

    async def _write_batch(self, key_id: UUID, batch: list[_Item]) -> None:
        try:
            outcomes = await self._decide(key_id, batch)
        except GatewayError as failure:  # NATS away: every request of the batch is told
            for item in batch:
                if item.future is not None and not item.future.done():
                    item.future.set_exception(failure)
            return
        except BaseException:  # the writing request was cancelled: the others wait for the next write
            self._queues[key_id] = [*batch, *self._queues.get(key_id, [])]
            raise
        for item, outcome in zip(batch, outcomes):
            if item.future is None or item.future.done():
                continue
            if isinstance(outcome, GatewayError):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    async def _decide(self, key_id: UUID, batch: list[_Item]) -> list[RateUse | GatewayError | None]:
        """Admit as many of the batch as fit, in order, and apply its true-ups, with one compare-and-set."""
        fresh = False
        for _ in range(MAX_ATTEMPTS):
            window, reset = window_of(self.clock())
            seen = self._seen.get(key_id)
            if seen is None or seen.window != window:
                seen, fresh = _Seen(window, *await self._read(key_id, window)), True
            requests, tokens = seen.requests, seen.tokens
            outcomes: list[RateUse | GatewayError | None] = []
            for item in batch:
                if item.key is None:  # a true-up: only while its window lasts
                    if item.window == window:
                        tokens = max(0, tokens + item.tokens)
                    outcomes.append(None)
                    continue
                over = _over(item.key, requests, tokens, item.tokens)
                if over is None:
                    requests, tokens = requests + 1, tokens + item.tokens
                    outcomes.append(RateUse(item.key, window, item.tokens, requests, tokens, reset))
                    continue
                if not fresh:  # another process may have trued tokens down since: look again before refusing
                    break
                used = requests if over == "rpm" else tokens
                headers = limit_headers(item.key.rpm_limit, item.key.tpm_limit, requests, tokens, reset)
                outcomes.append(refusal(item.key, over, used, item.tokens, window, reset, headers))
            if len(outcomes) < len(batch):
                self._seen.pop(key_id, None)
                fresh = True
                continue
            if (requests, tokens) != (seen.requests, seen.tokens):
                try:
                    revision = await self._write(key_id, window, requests, tokens, seen.revision)
                except Conflict:
                    self._seen.pop(key_id, None)
                    fresh = False
                    continue
                self._remember(key_id, _Seen(window, requests, tokens, revision))
            return outcomes
        contended = GatewayError(
            503,
            "this API key's rate limit could not be checked: too many requests with it at once across the gateways; "
            "retry shortly",
            "api_error",
            "rate_limit_contended",
        )
        return [contended] * len(batch)

    def _remember(self, key_id: UUID, seen: _Seen) -> None:
        if len(self._seen) >= MAX_REMEMBERED and key_id not in self._seen:
            self._seen.clear()
        self._seen[key_id] = seen

    async def _read(self, key_id: UUID, window: int) -> tuple[int, int, int]:
        try:
            return await asyncio.wait_for(self._store().read(counter_name(key_id, window)), STORE_SECONDS)
        except (Conflict, GatewayError):
            raise
        except Exception as exc:
            raise _unavailable(exc) from None

    async def _write(self, key_id: UUID, window: int, requests: int, tokens: int, revision: int) -> int:
        try:
            return await asyncio.wait_for(
                self._store().write(counter_name(key_id, window), requests, tokens, revision), STORE_SECONDS
            )
        except (Conflict, GatewayError):
            raise
        except Exception as exc:
            raise _unavailable(exc) from None

    def _store(self) -> WindowStore:
        if self.store is None:
            raise _unavailable(None)
        return self.store


def limited(key: KeyInfo) -> bool:
    """Whether `key` has a rate limit (a key without one need not be admitted here at all)."""
    return key.rpm_limit is not None or key.tpm_limit is not None


def _over(key: KeyInfo, requests: int, tokens: int, asked: int) -> str | None:
    if key.rpm_limit is not None and requests + 1 > key.rpm_limit:
        return "rpm"
    if key.tpm_limit is not None and tokens + asked > key.tpm_limit:
        return "tpm"
    return None


def token_bound(prompt: int, completion_limit: int | None, choices: int, model: Model) -> int:
    """A request's token bound, as tpm_limit counts it: its prompt bound (the one its budget reserved when it has
    one) plus its completion limit (the model's own when it sends none) per choice."""
    return prompt + (completion_limit or model.max_output_tokens) * choices


class _Counter(msgspec.Struct, array_like=True):
    requests: int
    tokens: int


def rates_bucket(stream: str) -> str:
    """The key-value bucket of the key rate counters beside the log `stream`."""
    return f"{stream}_KEY_RATES"


class NatsWindows:
    """The counters in a JetStream key-value bucket (in memory: a NATS restart starts the minute's counts
    afresh), each write a publish expecting the counter's last revision."""

    def __init__(self, kv):
        self.kv = kv

    @classmethod
    async def open(cls, nc: NATS, stream: str) -> NatsWindows:
        config = KeyValueConfig(bucket=rates_bucket(stream), ttl=WINDOW_TTL, storage=StorageType.MEMORY, history=1)
        return cls(await nc.jetstream().create_key_value(config=config))

    async def read(self, name: str) -> tuple[int, int, int]:
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            return 0, 0, 0
        counter = msgspec.json.decode(entry.value or b"[0,0]", type=_Counter)
        return counter.requests, counter.tokens, entry.revision or 0

    async def write(self, name: str, requests: int, tokens: int, revision: int) -> int:
        try:
            return await self.kv.update(name, msgspec.json.encode(_Counter(requests, tokens)), last=revision)
        except KeyWrongLastSequenceError:
            raise Conflict(name) from None


def counter_name(key_id: UUID, window: int) -> str:
    return f"{key_id}.{window}"


def _unavailable(exc: Exception | None) -> GatewayError:
    if exc is not None:
        log.warning("key rate counters unreachable: %s", exc or type(exc).__name__)
    return GatewayError(
        503,
        "this API key's rate limits cannot be checked right now (NATS is unreachable); retry shortly",
        "api_error",
        "service_unavailable",
    )
