"""What the gateway reports: every request it served (`UsageRecorded`), and, counted, those it refused."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec


class Api:
    """The front door a request came in by, as `UsageRecorded.api` and the logs name it."""

    CHAT_COMPLETIONS = "chat.completions"  # POST /v1/chat/completions
    EMBEDDINGS = "embeddings"  # POST /v1/embeddings
    RESPONSES = "responses"  # POST /v1/responses
    MESSAGES = "messages"  # POST /v1/messages (Anthropic's Messages API)


class Attempt(msgspec.Struct, frozen=True):
    """One call of an upstream model for a request that was retried or fell back to another model."""

    model: str  # the model id called
    status: int  # the HTTP status the attempt ended with (200: it answered)
    latency_ms: int  # from sending it to its answer's head or its failure


class UsageRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """One request through the gateway, with everything needed to bill and explain it.

    The prices applied travel with the event, so a replay reproduces every charge
    even after prices change. `cost` is pico-USD. Durations are microseconds.
    """

    trace_id: UUID
    account_id: UUID
    key_id: UUID
    model: str  # the model that answered (a fallback's, when the request fell back), as listed in the catalog
    requested_model: str | None
    provider: str
    prompt_tokens: int
    completion_tokens: int
    prompt_per_1k: int  # pico-USD per 1K tokens, as charged
    completion_per_1k: int
    cost: int
    status: str  # "ok" | "error"
    http_status: int
    timestamp: datetime
    latency_us: int
    upstream_us: int = 0
    first_token_us: int | None = None
    stream: bool = False
    estimated: bool = False  # token counts estimated because the upstream reported none
    request_id: str | None = None  # the client's x-request-id, kept alongside our trace id
    error: str | None = None
    lease_id: UUID | None = None  # the budget lease that paid for it
    # Breakdown of the counts above (each already included in prompt_tokens / completion_tokens):
    cached_prompt_tokens: int = 0  # prompt tokens read from the provider's prompt cache
    cache_write_tokens: int = 0  # prompt tokens written to the provider's prompt cache
    reasoning_tokens: int = 0  # completion tokens spent on reasoning / thinking
    cached_per_1k: int | None = None  # pico-USD per 1K cached prompt tokens, as charged (None: prompt price)
    cache_write_per_1k: int | None = None  # pico-USD per 1K cache-write tokens, as charged (None: prompt price)
    template_id: UUID | None = None  # the prompt template the request used, if any
    template_version: int | None = None
    api: str | None = None  # an `Api` value; None in events made before Mesh recorded it
    # every upstream call, in order, when there was more than one (retries, fallbacks); empty: one call, this one.
    # Only the last (the one that answered, or the last failure) is billed.
    attempts: list[Attempt] = []


class BodyRecorded(msgspec.Struct, frozen=True, kw_only=True):
    """What a request sent and got back, kept only when the operator turns body logging on
    (MESH_LOG_BODIES=on). It travels on a stream of its own with a maximum age, never on the billing log."""

    trace_id: UUID
    account_id: UUID
    timestamp: datetime
    request: str  # the client's JSON body, as sent (cut at MAX_LOGGED_BODY bytes)
    response: str | None = None  # the answer (a stream: its SSE frames); None when there was none
    truncated: bool = False  # a body was longer than MAX_LOGGED_BODY and is cut there


class RequestsRefused(msgspec.Struct, frozen=True, kw_only=True):
    """The requests one gateway process refused for one key over a minute at most, counted by error code
    (`key_spend_cap`, `insufficient_balance`, `rate_limit_exceeded`, ...).

    A refused request costs nothing and is never its own event: a client retrying a 402 in a loop adds to a
    count, never a flood. `refusal_id` is the message id JetStream deduplicates by, so a publish retried after a
    lost acknowledgement is stored once."""

    refusal_id: UUID
    account_id: UUID
    key_id: UUID
    since: datetime  # the first refusal counted
    until: datetime  # the last one
    counts: dict[str, int]


MAX_LOGGED_BODY = 256 * 1024  # bytes of each body kept (a NATS message holds 1 MiB by default)
