"""The webhook outbox: the account's endpoints, and the deliveries owed to them, derived from the event log.

A subscriber of the log like any read model (projections/runner.py applies each batch in one transaction with
its position, so a notification is queued once, whatever crashes), but its tables also hold what happened to
each delivery (attempts, status), which the log does not: it is never rebuilt (`mesh rebuild` does not offer
it) and always serves from generation 1 (`TABLES`). What each event queues:

- `topup.succeeded`, `topup.failed` (the top-up's account from its `topup.requested`), `account.auto_refill_failed`:
  one notification each.
- `usage.refused` counting `key_spend_cap`: `key.cap_reached`, at most once per key per KEY_CAP_QUIET of event time.
- `balance.low` does not come from one event: api/webhook_delivery.py watches the billing balances.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
import psycopg

from domain.account import Account
from domain.events import event_names
from domain.money import pico_to_usd
from domain.topup import TopUp
from domain.usage import RequestsRefused
from domain.webhook import RETRY_WINDOW, Webhooks
from projections.readmodel import Envelope

KEY_CAP_QUIET = timedelta(hours=1)  # key.cap_reached for one key at most this often
CAP_CODE = "key_spend_cap"  # the refusal code of a key at its spend cap (gateway)


class WebhookOutbox:
    name = "webhooks"
    tables = ("webhook_endpoints", "webhook_topups", "webhook_key_caps", "webhook_deliveries", "webhook_attempts")

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t["webhook_endpoints"]} (
                endpoint_id uuid primary key,
                account_id uuid not null,
                url text not null,
                events text[] not null,
                threshold numeric(40, 0),
                description text not null default '',
                armed boolean not null default true,  -- balance.low fires at the next crossing below threshold
                removed boolean not null default false,
                created_at timestamptz not null,
                updated_at timestamptz not null
            );
            create index if not exists {t["webhook_endpoints"]}_account on {t["webhook_endpoints"]} (account_id);
            create table if not exists {t["webhook_topups"]} (
                topup_id uuid primary key,
                account_id uuid not null,
                provider text not null,
                amount numeric(40, 0) not null
            );
            create table if not exists {t["webhook_key_caps"]} (
                key_id uuid primary key,
                notified_at timestamptz not null
            );
            create table if not exists {t["webhook_deliveries"]} (
                delivery_id uuid primary key,
                seq bigserial not null,  -- the order deliveries of one account go out in
                account_id uuid not null,
                endpoint_id uuid not null,
                event_id uuid not null,  -- the notification (the same for each endpoint; receivers dedupe by it)
                event_type text not null,
                body text not null,  -- the JSON sent, byte for byte what is signed
                status text not null,  -- pending | delivered | failed | cancelled
                attempts int not null default 0,
                created_at timestamptz not null,
                next_attempt_at timestamptz not null,
                retry_until timestamptz not null,
                last_status int,
                last_error text,
                delivered_at timestamptz,
                manual boolean not null default false  -- its next attempt is a resend by hand
            );
            create index if not exists {t["webhook_deliveries"]}_pending
                on {t["webhook_deliveries"]} (account_id, seq) where status = 'pending';
            create index if not exists {t["webhook_deliveries"]}_endpoint
                on {t["webhook_deliveries"]} (endpoint_id, seq);
            create table if not exists {t["webhook_attempts"]} (
                delivery_id uuid not null,
                attempt int not null,
                at timestamptz not null,
                status_code int,
                latency_ms int not null,
                error text,
                manual boolean not null default false,  -- a resend by hand
                primary key (delivery_id, attempt)
            );
        """)

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        for item in batch:
            await self._HANDLERS[type(item.event)](self, cur, t, item)

    async def _endpoint_added(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        await cur.execute(
            f"""insert into {t["webhook_endpoints"]} (endpoint_id, account_id, url, events, threshold,
                description, created_at, updated_at) values (%s, %s, %s, %s, %s, %s, %s, %s)
                on conflict (endpoint_id) do nothing""",
            (
                e.endpoint_id,
                e.account_id,
                e.url,
                e.events,
                e.balance_low_threshold,
                e.description,
                e.timestamp,
                e.timestamp,
            ),
        )

    async def _endpoint_updated(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        # a new threshold (or balance.low newly chosen) is watched from its next crossing on
        await cur.execute(
            f"""update {t["webhook_endpoints"]} set url = %s, events = %s, description = %s,
                armed = armed or threshold is distinct from %s or not ('balance.low' = any(events)),
                threshold = %s, updated_at = %s where endpoint_id = %s""",
            (
                e.url,
                e.events,
                e.description,
                e.balance_low_threshold,
                e.balance_low_threshold,
                e.timestamp,
                e.endpoint_id,
            ),
        )

    async def _endpoint_removed(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        await cur.execute(
            f"update {t['webhook_endpoints']} set removed = true, updated_at = %s where endpoint_id = %s",
            (e.timestamp, e.endpoint_id),
        )
        await cur.execute(
            f"update {t['webhook_deliveries']} set status = 'cancelled' where endpoint_id = %s and status = 'pending'",
            (e.endpoint_id,),
        )

    async def _topup_requested(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        await cur.execute(
            f"insert into {t['webhook_topups']} (topup_id, account_id, provider, amount)"
            " values (%s, %s, %s, %s) on conflict do nothing",
            (e.originator_id, e.account_id, e.provider, e.amount),
        )

    async def _topup_ended(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        """A top-up that succeeded or failed: its notification is named as its event."""
        e = item.event
        cur_row = await cur.execute(
            f"select account_id, provider from {t['webhook_topups']} where topup_id = %s", (e.originator_id,)
        )
        row = await cur_row.fetchone()
        if row is None:
            return
        data = {"topup_id": str(e.originator_id), "provider": row[1]}
        if isinstance(e, TopUp.Succeeded):
            data["amount_usd"] = pico_to_usd(e.amount)
        else:
            data["reason"] = e.reason
        await enqueue(cur, t, row[0], item.topic, data, item.time, notification_id(item.position, item.topic))

    async def _auto_refill_failed(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        data = {"refill_id": str(e.refill_id), "reason": e.reason}
        await enqueue(
            cur, t, e.originator_id, "auto_refill.failed", data, item.time, notification_id(item.position, item.topic)
        )

    async def _refused(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        if item.event.counts.get(CAP_CODE):
            await self._cap_reached(cur, t, item, item.event)

    async def _cap_reached(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope, e: RequestsRefused):
        claimed = await cur.execute(
            f"""insert into {t["webhook_key_caps"]} as c (key_id, notified_at) values (%s, %s)
                on conflict (key_id) do update set notified_at = excluded.notified_at
                where c.notified_at <= excluded.notified_at - %s::interval returning key_id""",
            (e.key_id, e.until, KEY_CAP_QUIET),
        )
        if await claimed.fetchone() is None:
            return
        data = {"key_id": str(e.key_id), "refused_requests": e.counts[CAP_CODE]}
        await enqueue(
            cur, t, e.account_id, "key.cap_reached", data, item.time, notification_id(item.position, item.topic)
        )

    # The one table of what the outbox does with each event it reads.
    _HANDLERS = {
        Webhooks.EndpointAdded: _endpoint_added,
        Webhooks.EndpointUpdated: _endpoint_updated,
        Webhooks.EndpointRemoved: _endpoint_removed,
        TopUp.Requested: _topup_requested,
        TopUp.Succeeded: _topup_ended,
        TopUp.Failed: _topup_ended,
        Account.AutoRefillFailed: _auto_refill_failed,
        RequestsRefused: _refused,
    }
    topics = event_names(_HANDLERS)


WEBHOOKS = WebhookOutbox()
GENERATION = 1  # the outbox is never rebuilt (see the module docstring)
TABLES = {table: f"{table}_g{GENERATION}" for table in WEBHOOKS.tables}


def notification_id(position: int, topic: str) -> UUID:
    """The same notification from the same event, however often it is derived."""
    return uuid5(NAMESPACE_URL, f"mesh:webhook-event:{position}:{topic}")


def payload(event_id: UUID, event_type: str, account_id: UUID, created: datetime, data: dict) -> str:
    """The JSON body sent to every endpoint for one notification."""
    return json.dumps(
        {
            "id": str(event_id),
            "type": event_type,
            "created": int(created.timestamp()),
            "account_id": str(account_id),
            "data": data,
        },
        separators=(",", ":"),
    )


async def enqueue(
    cur: psycopg.AsyncCursor,
    t: dict[str, str],
    account_id: UUID,
    event_type: str,
    data: dict,
    created: datetime,
    event_id: UUID,
    endpoint_id: UUID | None = None,
) -> None:
    """A delivery of the notification to each live endpoint of the account that subscribed to it (or to
    `endpoint_id` alone)."""
    body = payload(event_id, event_type, account_id, created, data)
    await cur.execute(
        f"""insert into {t["webhook_deliveries"]} (delivery_id, account_id, endpoint_id, event_id, event_type, body,
                status, created_at, next_attempt_at, retry_until)
            select gen_random_uuid(), account_id, endpoint_id, %s, %s, %s, 'pending', now(), now(), now() + %s
            from {t["webhook_endpoints"]}
            where account_id = %s and not removed and %s = any(events) and (%s::uuid is null or endpoint_id = %s)""",
        (event_id, event_type, body, RETRY_WINDOW, account_id, event_type, endpoint_id, endpoint_id),
    )


# Queries (the API's, the dashboard's and the delivery worker's)


class EndpointRow(msgspec.Struct):
    endpoint_id: UUID
    account_id: UUID
    url: str
    events: list[str]
    threshold: int | None
    description: str
    created_at: datetime
    updated_at: datetime


class AttemptRow(msgspec.Struct):
    attempt: int
    at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    manual: bool


class DeliveryRow(msgspec.Struct):
    delivery_id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    body: str
    status: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime | None
    retry_until: datetime
    last_status: int | None
    last_error: str | None
    delivered_at: datetime | None
    attempt_log: list[AttemptRow] = []


_ENDPOINT = "endpoint_id, account_id, url, events, threshold, description, created_at, updated_at"


def _endpoint(row) -> EndpointRow:
    return EndpointRow(row[0], row[1], row[2], list(row[3]), int(row[4]) if row[4] is not None else None, *row[5:])


async def endpoints_of(conn: psycopg.AsyncConnection, account_id: UUID) -> list[EndpointRow]:
    cur = await conn.execute(
        f"select {_ENDPOINT} from {TABLES['webhook_endpoints']} where account_id = %s and not removed"
        " order by created_at, endpoint_id",
        (account_id,),
    )
    return [_endpoint(r) for r in await cur.fetchall()]


async def endpoint_of(conn: psycopg.AsyncConnection, account_id: UUID, endpoint_id: UUID) -> EndpointRow | None:
    cur = await conn.execute(
        f"select {_ENDPOINT} from {TABLES['webhook_endpoints']}"
        " where account_id = %s and endpoint_id = %s and not removed",
        (account_id, endpoint_id),
    )
    row = await cur.fetchone()
    return _endpoint(row) if row else None


_DELIVERY = (
    "delivery_id, endpoint_id, event_id, event_type, body, status, attempts, created_at,"
    " case when status = 'pending' then next_attempt_at end, retry_until, last_status, last_error, delivered_at"
)


async def deliveries_of(
    conn: psycopg.AsyncConnection, endpoint_id: UUID, limit: int, delivery_id: UUID | None = None
) -> list[DeliveryRow]:
    """The endpoint's deliveries, newest first, each with its attempts (oldest first)."""
    cur = await conn.execute(
        f"select {_DELIVERY} from {TABLES['webhook_deliveries']} where endpoint_id = %s"
        " and (%s::uuid is null or delivery_id = %s) order by seq desc limit %s",
        (endpoint_id, delivery_id, delivery_id, limit),
    )
    deliveries = [DeliveryRow(*r) for r in await cur.fetchall()]
    if deliveries:
        cur = await conn.execute(
            f"select delivery_id, attempt, at, status_code, latency_ms, error, manual"
            f" from {TABLES['webhook_attempts']} where delivery_id = any(%s) order by delivery_id, attempt",
            ([d.delivery_id for d in deliveries],),
        )
        attempts: dict[UUID, list[AttemptRow]] = {}
        for row in await cur.fetchall():
            attempts.setdefault(row[0], []).append(AttemptRow(*row[1:]))
        for d in deliveries:
            d.attempt_log = attempts.get(d.delivery_id, [])
    return deliveries


async def resend(conn: psycopg.AsyncConnection, endpoint_id: UUID, delivery_id: UUID) -> bool:
    """Queue the delivery again now, with a fresh retry window (its next attempt is recorded as by hand)."""
    cur = await conn.execute(
        f"""update {TABLES["webhook_deliveries"]} set status = 'pending', next_attempt_at = now(),
            retry_until = now() + %s, manual = true where delivery_id = %s and endpoint_id = %s
            and status <> 'cancelled' returning delivery_id""",
        (RETRY_WINDOW, delivery_id, endpoint_id),
    )
    return await cur.fetchone() is not None
