"""The billing read model: per-account credits and spend, per-key spend, and spend rolled up by hour and by
day; its tables and how a batch of events is applied to them (projections/billing_handlers.py: what each event
changes; projections/billing.py reads them).

Per-request rows are not kept here for long: the request logs are a read model of their own
(projections/logs.py), so trimming or rebuilding them never touches money. What billing keeps of each request
is a compact row in `usage_recent` (trace id, time, what money groups by, tokens, cost), for two jobs:

- Exactly once. A usage event is counted once: (trace id, event time) is the key of `usage_recent`, and only
  rows actually inserted move a balance or a rollup. A usage event appears twice on the stream only when the
  gateway re-publishes the same encoded event (a retried publish past JetStream's 2-minute duplicate window,
  a replayed spool), so the copy has the same trace id and the same time.
- Instants between hours. `?at=` balances and `from`/`to` windows are answered from the daily and hourly
  rollups for whole days and hours, and from `usage_recent` for the part of an hour at either edge.

`usage_recent` is partitioned by month and keeps RECENT_DAYS: a month is dropped once the stream's own time
(not the clock, so a rebuild drops at the same events as the live model did) is RECENT_DAYS past its end.
Consequences, both only for events or instants older than that: a usage event re-published more than
RECENT_DAYS after it happened (a spool kept that long) is counted even if its first copy was; and an `at`,
`from` or `to` older than that is answered to the hour (the partial hour at that edge is left out).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Sequence

import psycopg

from domain.events import event_names
from domain.usage import UsageRecorded
from projections.billing_handlers import HANDLERS, BillingBatch
from projections.columns import EventColumns, chunks
from projections.partitions import drop_months_before, ensure_months
from projections.readmodel import Envelope

RECENT_DAYS = 35  # how long billing keeps a compact row per request (see the module docstring)


class Billing:
    name = "billing"
    tables = (
        "balances",
        "key_spend",
        "usage_recent",
        "spend_hourly",
        "spend_daily",
        "credit_grants",
        "leases",
        "topups",
        "auto_refills",
        "key_refusals",
    )
    topics = event_names(HANDLERS)  # the events it reads: those it has a handler for

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        rollups = "".join(
            f"""
            create table if not exists {t[table]} (
                account_id uuid not null,
                time timestamptz not null,  -- the {unit} the requests began in (UTC)
                key_id uuid not null,
                provider text not null,
                model text not null,
                {", ".join(f"{c} bigint not null" for c in ROLLUP_SUMS.split(", ")[:-1])},
                spend numeric(40, 0) not null,
                primary key (account_id, time, key_id, provider, model)
            );"""
            for table, unit in _ROLLUPS.items()
        )
        await cur.execute(f"""
            create table if not exists {t["balances"]} (
                account_id uuid primary key,
                credits numeric(40, 0) not null default 0,
                spend numeric(40, 0) not null default 0
            );
            create table if not exists {t["key_spend"]} (
                key_id uuid primary key,
                account_id uuid not null,
                requests bigint not null default 0,
                errors bigint not null default 0,
                prompt_tokens bigint not null default 0,
                completion_tokens bigint not null default 0,
                spend numeric(40, 0) not null default 0
            );
            -- when the key last made a request (the newest usage event's time); NULL until it makes one
            alter table {t["key_spend"]} add column if not exists last_used timestamptz;
            create table if not exists {t["credit_grants"]} (
                position bigint primary key,
                account_id uuid not null,
                amount numeric(40, 0) not null,
                reason text not null,
                granted_by text not null,
                time timestamptz not null
            );
            create index if not exists {t["credit_grants"]}_account on {t["credit_grants"]} (account_id, position);
            create table if not exists {t["usage_recent"]} (
                trace_id uuid not null,
                time timestamptz not null,
                account_id uuid not null,
                key_id uuid not null,
                provider text not null,
                model text not null,
                status text not null,
                prompt_tokens bigint not null,
                completion_tokens bigint not null,
                cached_prompt_tokens bigint not null,
                cache_write_tokens bigint not null,
                reasoning_tokens bigint not null,
                cost numeric(40, 0) not null,
                lease_id uuid,
                primary key (trace_id, time)
            ) partition by range (time);
            {rollups}
            create table if not exists {t["leases"]} (
                lease_id uuid primary key,
                account_id uuid not null,
                key_id uuid not null,
                amount numeric(40, 0) not null,
                spent numeric(40, 0) not null default 0,  -- from usage events paid by this lease
                expires_at timestamptz not null,
                settled boolean not null default false
            );
            create index if not exists {t["leases"]}_open on {t["leases"]} (expires_at) where not settled;
            create table if not exists {t["topups"]} (
                topup_id uuid primary key,
                account_id uuid not null,
                provider text not null,
                reference text not null,
                amount numeric(40, 0) not null,
                status text not null,
                received numeric(40, 0) not null default 0,
                refunded numeric(40, 0) not null default 0,
                disputed numeric(40, 0) not null default 0,
                failures int not null default 0,
                last_failure text,
                expires_at timestamptz,
                created_at timestamptz not null,
                updated_at timestamptz not null
            );
            create index if not exists {t["topups"]}_account on {t["topups"]} (account_id, created_at);
            -- requests the gateways refused (RequestsRefused): a row per event and code, so an event sent again
            -- is counted once
            create table if not exists {t["key_refusals"]} (
                refusal_id uuid not null,
                code text not null,
                account_id uuid not null,
                key_id uuid not null,
                until timestamptz not null,
                count bigint not null,
                primary key (refusal_id, code)
            );
            create index if not exists {t["key_refusals"]}_account on {t["key_refusals"]} (account_id, until);
            create table if not exists {t["auto_refills"]} (
                account_id uuid primary key,
                customer text,
                threshold numeric(40, 0),
                amount numeric(40, 0),
                payment_method text,
                max_failures int,
                enabled boolean not null default false,
                armed boolean not null default true,
                pending uuid,
                failures int not null default 0,
                last_failure text,
                disabled_reason text,
                updated_at timestamptz not null
            );
            -- the saved card as Stripe describes it (Account.AutoRefillCardSaved); NULL until one is saved
            alter table {t["auto_refills"]} add column if not exists card_brand text,
                add column if not exists card_last4 text, add column if not exists card_exp_month int,
                add column if not exists card_exp_year int;
        """)

    def indexes(self, t: dict[str, str]) -> list[str]:
        recent = t["usage_recent"]
        return [f"create index if not exists {recent}_account_time on {recent} (account_id, time)"]

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        # In a pipeline: the statements of the batch's aggregate events (a few per lease cycle) go to PostgreSQL
        # without waiting for each one's answer; an error still surfaces inside the caller's transaction.
        async with cur.connection.pipeline():
            pending = BillingBatch(cur, t)
            for item in batch:
                await HANDLERS[type(item.event)](pending, item)
            if pending.credits:
                await cur.executemany(
                    f"""insert into {t["balances"]} (account_id, credits) values (%s, %s)
                        on conflict (account_id) do update set credits = {t["balances"]}.credits + excluded.credits""",
                    list(pending.credits.items()),
                )
            if pending.usage:
                stream_time = min(pending.streamed)
                await drop_months_before(cur, t["usage_recent"], stream_time - timedelta(days=RECENT_DAYS))
                await ensure_months(cur, t["usage_recent"], (e.timestamp for e in pending.usage))
                for chunk in chunks(pending.usage):  # PostgreSQL writes one while the next is encoded
                    await self._apply_usage(cur, t, chunk)

    async def _apply_usage(self, cur: psycopg.AsyncCursor, t: dict[str, str], events: Sequence[UsageRecorded]) -> None:
        """These events (a chunk of the batch) in one statement: insert the requests not seen before (by trace id
        and time), and add only what was inserted to the balances, leases, per-key totals and the hourly and daily
        rollups."""
        rollups = "".join(
            f"""
                ), {table} as (
                    insert into {t[table]} as s (account_id, time, key_id, provider, model, {ROLLUP_SUMS})
                    select account_id, date_trunc('{unit}', time, 'UTC'), key_id, provider, model, count(*),
                        count(*) filter (where status <> 'ok'), {", ".join(f"sum({c})" for c in TOKENS)}, sum(cost)
                    from new group by 1, 2, 3, 4, 5
                    on conflict (account_id, time, key_id, provider, model) do update set
                        {", ".join(f"{c} = s.{c} + excluded.{c}" for c in ROLLUP_SUMS.split(", "))}"""
            for table, unit in _ROLLUPS.items()
        )
        await cur.execute(
            f"""with new as (
                    insert into {t["usage_recent"]} ({_RECENT.columns}) select * from {_RECENT.rows}
                    on conflict (trace_id, time) do nothing
                    returning *
                ), accounts as (
                    insert into {t["balances"]} as b (account_id, spend)
                    select account_id, sum(cost) from new group by account_id
                    on conflict (account_id) do update set spend = b.spend + excluded.spend
                ), lease_spend as (
                    update {t["leases"]} l set spent = l.spent + s.amount
                    from (select lease_id, sum(cost) as amount from new where lease_id is not null group by lease_id) s
                    where l.lease_id = s.lease_id{rollups}
                )
                insert into {t["key_spend"]} as k
                    (key_id, account_id, requests, errors, prompt_tokens, completion_tokens, spend, last_used)
                select key_id, account_id, count(*), count(*) filter (where status <> 'ok'), sum(prompt_tokens),
                    sum(completion_tokens), sum(cost), max(time) from new group by key_id, account_id
                on conflict (key_id) do update set requests = k.requests + excluded.requests,
                    errors = k.errors + excluded.errors, prompt_tokens = k.prompt_tokens + excluded.prompt_tokens,
                    completion_tokens = k.completion_tokens + excluded.completion_tokens,
                    spend = k.spend + excluded.spend, last_used = greatest(k.last_used, excluded.last_used)""",
            _RECENT.params(events),
        )


# What billing keeps of a usage event, and the column types.
_RECENT = EventColumns(
    {
        "trace_id": "uuid",
        "timestamp": "timestamptz",
        "account_id": "uuid",
        "key_id": "uuid",
        "provider": "text",
        "model": "text",
        "status": "text",
        "prompt_tokens": "bigint",
        "completion_tokens": "bigint",
        "cached_prompt_tokens": "bigint",
        "cache_write_tokens": "bigint",
        "reasoning_tokens": "bigint",
        "cost": "numeric",
        "lease_id": "uuid",
    }
)
TOKENS = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens", "cache_write_tokens", "reasoning_tokens")
ROLLUP_SUMS = ", ".join(("requests", "errors", *TOKENS, "spend"))
_ROLLUPS = {"spend_hourly": "hour", "spend_daily": "day"}  # rollup table: the time unit it sums over
