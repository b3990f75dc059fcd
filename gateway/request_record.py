"""What one request did, as its UsageRecorded event, and waiting until that event is durable."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Awaitable

import msgspec

from domain.usage import Api, Attempt, UsageRecorded
from gateway.admission import KeyInfo
from gateway.leases import Ticket
from gateway.catalog import Model
from gateway.errors import GatewayError
from gateway.key_rate import RateUse
from gateway.providers.base import Usage
from gateway.prompt_templates import TemplateUse
from gateway.usage import NotStored

log = logging.getLogger("mesh.gateway")


class RequestRecord:
    """Builds the UsageRecorded event for one request."""

    def __init__(
        self,
        trace_id: uuid.UUID,
        key: KeyInfo,
        model: Model,
        requested: str | None,
        started: int,
        request_id: str | None,
        stream: bool,
        ticket: Ticket,
        api: str = Api.CHAT_COMPLETIONS,
    ):
        self.trace_id, self.key, self.model, self.requested = trace_id, key, model, requested
        self.started, self.request_id, self.stream, self.ticket = started, request_id, stream, ticket
        self.api = api
        self.emitted = False
        self.template: TemplateUse | None = None
        self.request_body: bytes | None = None  # set when bodies are logged
        self.response_body: bytes | None = None
        self.prompt_bound: int | None = None  # the prompt tokens reserved (None: a free model)
        self.rate: RateUse | None = None  # what it took of its key's rate limits (None: the key has none)
        self.bounds: dict[str, int | None] = {}  # each candidate model's prompt bound (gateway/fallbacks.py)
        self.attempts: list[Attempt] = []  # every upstream call, in order, when there was more than one

    def billed(self, usage: Usage) -> Usage:
        """The usage the request is billed for."""
        if usage.prompt_estimated and self.prompt_bound is not None and usage.prompt_tokens < self.prompt_bound:
            # the upstream counted no prompt (a stream cut before its usage, an upstream that reports none): it
            # bills the whole prompt all the same, images and files included, so Mesh bills what it reserved
            usage = msgspec.structs.replace(usage, prompt_tokens=self.prompt_bound)
        return usage

    def cost(self, usage: Usage) -> int:
        """What `usage` costs, in pico-USD: the `cost` of the event `done` makes of it (the answer states it)."""
        return self._priced(self.billed(usage))

    def _priced(self, billed: Usage) -> int:
        return self.model.price.cost(
            billed.prompt_tokens, billed.completion_tokens, billed.cached_prompt_tokens, billed.cache_write_tokens
        )

    def done(
        self,
        usage: Usage,
        upstream_us: int,
        first_token_ns: int | None,
        error: str | None = None,
        http_status: int = 200,
    ) -> UsageRecorded:
        """The request's event. Its times run from the request's arrival, as its client measures them (total,
        first token: `first_token_ns` is the moment, `time.perf_counter_ns()`); `upstream_us` is the upstream's
        own time, from sending it the request."""
        price = self.model.price
        usage = self.billed(usage)
        return UsageRecorded(
            trace_id=self.trace_id,
            account_id=self.key.account_id,
            key_id=self.key.key_id,
            model=self.model.id,
            requested_model=self.requested,
            provider=self.model.provider,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            prompt_per_1k=price.prompt_per_1k,
            completion_per_1k=price.completion_per_1k,
            cost=self._priced(usage),
            status="ok" if error is None else "error",
            http_status=http_status,
            timestamp=datetime.now(timezone.utc),
            latency_us=(time.perf_counter_ns() - self.started) // 1000,
            upstream_us=upstream_us,
            first_token_us=(first_token_ns - self.started) // 1000 if first_token_ns is not None else None,
            stream=self.stream,
            estimated=usage.estimated,
            request_id=self.request_id,
            error=error,
            lease_id=self.ticket.lease.id if self.ticket.lease is not None else None,
            cached_prompt_tokens=usage.cached_prompt_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cached_per_1k=price.cached,
            cache_write_per_1k=price.cache_write,
            template_id=self.template.template_id if self.template is not None else None,
            template_version=self.template.version if self.template is not None else None,
            api=self.api,
            attempts=self.attempts if len(self.attempts) > 1 else [],
        )

    def failed(self, exc: GatewayError) -> UsageRecorded:
        return self.done(Usage(), 0, None, exc.message, exc.status)


async def durable(stored: Awaitable[None], trace_id: uuid.UUID) -> None:
    """Wait until a usage event is stored; if it cannot be, the answer must not leave (503)."""
    try:
        await stored
    except NotStored as exc:
        log.error("usage of %s not recorded, its answer withheld: %s", trace_id, exc)
        raise GatewayError(
            503,
            "this request's usage could not be recorded, so its answer is withheld; try again later",
            "api_error",
            "usage_not_recorded",
        ) from None
