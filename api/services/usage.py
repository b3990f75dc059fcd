"""An account's usage over a range, as the Billing page shows it: spend, requests, tokens and errors per hour or
day stacked by model, provider or key; the same by model and by key; latency percentiles per hour or day; and
the credits the account received."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.read_models import BILLING, LOGS
from api.services.as_of import AsOf, read_as_of
from api.services.billing import check_span
from projections import billing, directory, logs
from projections.spend_history import OTHER_KEYS, SpendRow, spend_history
from domain.bounds import check_aware

STACKS = ("model", "provider", "key")  # what a series per bucket is stacked by
# what a series per bucket can count, from a spend row
MEASURES = {
    "spend": lambda r: r.spend,
    "requests": lambda r: r.requests,
    "tokens": lambda r: r.prompt_tokens + r.completion_tokens,
    "errors": lambda r: r.errors,
}
MAX_CREDITS = 200  # credit movements shown, newest first


class KeyUsage(msgspec.Struct, frozen=True):
    key_id: UUID
    label: str  # the key's label, unique on the page (a shared label gets the end of the id)
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend: int  # pico-USD


class Usage(msgspec.Struct, frozen=True):
    unit: str  # "hour" or "day": the buckets
    by: str | None  # a name of STACKS; None: no rows per bucket
    by_bucket: list[tuple[str, str, int]]  # (bucket, what it stacks by, the measure), buckets in order
    by_model: list[SpendRow]  # largest spend first
    by_key: list[KeyUsage]  # largest spend first
    as_of: AsOf

    @property
    def total(self) -> int:
        return sum(r.spend for r in self.by_model)


class Latency(msgspec.Struct, frozen=True):
    buckets: list[logs.LatencyBucket]
    as_of: AsOf


class UsageService:
    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def usage(
        self,
        account_id: UUID,
        unit: str,
        by: str | None,
        start: datetime,
        end: datetime,
        measure: str = "spend",
        named: int = 7,
    ) -> Usage:
        """Over [start, end): `measure` (a name of MEASURES) per `unit` stacked `by` (None: not asked), and all of
        them by provider and model and by key, from one snapshot of the billing read model (the same sums as
        `GET /api/billing/spend`). Stacked by key, the `named` keys of the largest measure are told apart and the
        others summed as OTHER_KEYS, when there are more than `named` + 1."""
        if by is not None and by not in STACKS:
            raise ValueError(f"by is one of {STACKS}, got {by!r}")
        value = MEASURES[measure]
        check_span([unit], start, end)
        check_aware(start, "from"), check_aware(end, "to")  # in the years a time may be in
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("set transaction isolation level repeatable read")
                per_model = await spend_history(conn, account_id, ["provider", "model"], start, end)
                per_key = await spend_history(conn, account_id, ["key"], start, end)
                per_bucket, keys = [], None
                if by == "key" and len(per_key) > named + 1:
                    keys = [UUID(r.group["key"]) for r in sorted(per_key, key=lambda r: -value(r))[:named]]
                if by is not None:
                    per_bucket = await spend_history(conn, account_id, [unit, by], start, end, keys=keys)
                labels = _labels({k.key_id: k.label for k in await directory.keys_of(conn, account_id)})
                as_of = await read_as_of(conn, BILLING)
        name = (lambda key: labels.get(key, key)) if by == "key" else (lambda group: group)
        return Usage(
            unit,
            by,
            [(r.group[unit], name(r.group[by]), value(r)) for r in per_bucket] if by is not None else [],
            sorted(per_model, key=lambda r: (-r.spend, r.group["provider"], r.group["model"])),
            sorted(
                (
                    KeyUsage(
                        UUID(r.group["key"]),
                        labels.get(r.group["key"], r.group["key"]),
                        r.requests,
                        r.errors,
                        r.prompt_tokens,
                        r.completion_tokens,
                        r.spend,
                    )
                    for r in per_key
                ),
                key=lambda k: (-k.spend, k.label),
            ),
            as_of,
        )

    async def latency(self, account_id: UUID, unit: str, start: datetime, end: datetime) -> Latency:
        """The p50 and p95 of the total latency per `unit` of [start, end), from the logs read model (its
        retention bounds how far back they go)."""
        check_span([unit], start, end)
        check_aware(start, "from"), check_aware(end, "to")  # in the years a time may be in
        async with self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("set transaction isolation level repeatable read")
                buckets = await logs.latency_by_bucket(conn, account_id, unit, start, end)
                as_of = await read_as_of(conn, LOGS)
        return Latency(buckets, as_of)

    async def credits(self, account_id: UUID) -> list[billing.CreditRow]:
        """The newest MAX_CREDITS credit movements of the account: grants, top-ups, auto-refills, refunds."""
        async with self.pool.connection() as conn:
            return await billing.credit_history(conn, account_id, MAX_CREDITS)


def _labels(labels: dict[UUID, str]) -> dict[str, str]:
    """Key labels by key id (as a spend history names keys); a label two keys share, or the name of the other
    keys together, ends with "…" and the end of the id, so a chart's legend and a table tell them apart."""
    seen: dict[str, int] = {OTHER_KEYS: 1}
    for label in labels.values():
        seen[label] = seen.get(label, 0) + 1
    return {str(k): label if seen[label] == 1 else f"{label} …{str(k)[-4:]}" for k, label in labels.items()}
