"""What the billing read model answers: balances (now and at an instant), open leases past their expiry,
per-key totals, top-ups and auto-refills (spend over any window: projections/spend_history.py).

The model itself is projections/billing_projection.py (its tables; what each event changes of them:
projections/billing_handlers.py); its docstring says how instants and windows between hours are answered.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import msgspec
import psycopg

from projections.spend_history import spend_history


class Balance(msgspec.Struct, frozen=True):
    credits: int  # pico-USD
    spend: int

    @property
    def available(self) -> int:
        return self.credits - self.spend


async def balance_of(conn: psycopg.AsyncConnection, account_id: UUID) -> Balance:
    cur = await conn.execute("select credits, spend from balances where account_id = %s", (account_id,))
    row = await cur.fetchone()
    return Balance(int(row[0]), int(row[1])) if row else Balance(0, 0)


async def expired_leases(conn: psycopg.AsyncConnection, grace_seconds: float) -> list[tuple[UUID, UUID, UUID, int]]:
    """Open leases past their expiry (their holder is gone): (lease, account, key, spent by its usage)."""
    cur = await conn.execute(
        "select lease_id, account_id, key_id, spent from leases where not settled"
        " and expires_at < now() - make_interval(secs => %s) order by expires_at limit 100",
        (grace_seconds,),
    )
    return [(r[0], r[1], r[2], int(r[3])) for r in await cur.fetchall()]


class KeyStats(msgspec.Struct, frozen=True):
    requests: int = 0  # served (refused ones are in `refused`)
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    spend: int = 0  # pico-USD
    refused: dict[str, int] = {}  # requests refused, by error code (usage.refused)
    last_used: datetime | None = None  # the key's newest request (all-time stats only)

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())


async def key_stats(
    conn: psycopg.AsyncConnection, account_id: UUID, start: datetime | None = None, end: datetime | None = None
) -> dict[UUID, KeyStats]:
    """Per-key totals for the account: all time, or over [start, end) when either is given."""
    if start is None and end is None:
        cur = await conn.execute(
            "select key_id, requests, errors, prompt_tokens, completion_tokens, spend, last_used from key_spend"
            " where account_id = %s",
            (account_id,),
        )
        stats = {r[0]: KeyStats(*(int(v) for v in r[1:6]), last_used=r[6]) for r in await cur.fetchall()}
    else:
        stats = {
            UUID(row.group["key"]): KeyStats(
                row.requests, row.errors, row.prompt_tokens, row.completion_tokens, row.spend
            )
            for row in await spend_history(conn, account_id, ["key"], start, end)
        }
    for key_id, refused in (await refusals_by_key(conn, account_id, start, end)).items():
        stats[key_id] = msgspec.structs.replace(stats.get(key_id, KeyStats()), refused=refused)
    return stats


async def refusals_by_key(
    conn: psycopg.AsyncConnection,
    account_id: UUID,
    start: datetime | None = None,
    end: datetime | None = None,
    key_id: UUID | None = None,
) -> dict[UUID, dict[str, int]]:
    """Requests the gateways refused, per key and error code: all time, or those counted up to a moment in
    [start, end) (a count covers a minute at most, and belongs to the moment it ends)."""
    cur = await conn.execute(
        """select key_id, code, sum(count) from key_refusals
           where account_id = %s
             and (%s::timestamptz is null or until >= %s) and (%s::timestamptz is null or until < %s)
             and (%s::uuid is null or key_id = %s)
           group by key_id, code order by key_id, code""",
        (account_id, start, start, end, end, key_id, key_id),
    )
    found: dict[UUID, dict[str, int]] = {}
    for key, code, count in await cur.fetchall():
        found.setdefault(key, {})[code] = int(count)
    return found


async def balance_at(conn: psycopg.AsyncConnection, account_id: UUID, at: datetime) -> Balance:
    """Credits and spend as they stood at `at` (inclusive): grants up to then, spend from the rollups and
    `usage_recent` (see projections/billing_projection.py for instants older than RECENT_DAYS)."""
    cur = await conn.execute(
        "select coalesce(sum(amount), 0) from credit_grants where account_id = %s and time <= %s", (account_id, at)
    )
    credits = (await cur.fetchone())[0]
    spent = await spend_history(conn, account_id, [], None, at + timedelta(microseconds=1))
    return Balance(int(credits), spent[0].spend if spent else 0)


class TopUpRow(msgspec.Struct):
    id: UUID
    provider: str
    reference: str
    amount: int
    status: str
    received: int
    refunded: int
    disputed: int
    failures: int
    last_failure: str | None
    expires_at: datetime | None
    created_at: datetime


async def topups_of(conn: psycopg.AsyncConnection, account_id: UUID) -> list[TopUpRow]:
    cur = await conn.execute(
        """select topup_id, provider, reference, amount, status, received, refunded, disputed, failures,
                  last_failure, expires_at, created_at from topups where account_id = %s order by created_at desc""",
        (account_id,),
    )
    return [
        TopUpRow(r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), int(r[6]), int(r[7]), r[8], r[9], r[10], r[11])
        for r in await cur.fetchall()
    ]


async def due_to_expire(conn: psycopg.AsyncConnection) -> list[tuple[str, str]]:
    cur = await conn.execute(
        "select provider, reference from topups where status = 'pending' and expires_at < now() limit 100"
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


class AutoRefillRow(msgspec.Struct):
    account_id: UUID
    customer: str | None
    threshold: int | None
    amount: int | None
    payment_method: str | None
    enabled: bool
    armed: bool
    pending: UUID | None
    failures: int
    last_failure: str | None
    disabled_reason: str | None
    updated_at: datetime
    balance: int
    card_brand: str | None = None  # the saved card, as Stripe describes it
    card_last4: str | None = None
    card_exp_month: int | None = None
    card_exp_year: int | None = None


_REFILL_COLUMNS = """a.account_id, a.customer, a.threshold, a.amount, a.payment_method, a.enabled, a.armed, a.pending,
    a.failures, a.last_failure, a.disabled_reason, a.updated_at, coalesce(b.credits - b.spend, 0), a.card_brand,
    a.card_last4, a.card_exp_month, a.card_exp_year"""


def _refill_row(r: tuple) -> AutoRefillRow:
    values = list(r)
    for i in (2, 3, 12):
        values[i] = int(values[i]) if values[i] is not None else None
    return AutoRefillRow(*values)


async def auto_refill_of(conn: psycopg.AsyncConnection, account_id: UUID) -> AutoRefillRow | None:
    cur = await conn.execute(
        f"select {_REFILL_COLUMNS} from auto_refills a left join balances b using (account_id) where a.account_id = %s",
        (account_id,),
    )
    row = await cur.fetchone()
    return _refill_row(row) if row else None


async def auto_refills_to_check(conn: psycopg.AsyncConnection) -> list[AutoRefillRow]:
    """Enabled auto-refills that may need a step: below the threshold, pending, or waiting to re-arm."""
    cur = await conn.execute(
        f"""select {_REFILL_COLUMNS} from auto_refills a join balances b using (account_id)
            where a.enabled and (a.pending is not null or (a.armed and b.credits - b.spend < a.threshold)
                                 or (not a.armed and b.credits - b.spend >= a.threshold))"""
    )
    return [_refill_row(r) for r in await cur.fetchall()]


async def pending_topups(conn: psycopg.AsyncConnection, account_id: UUID, since: datetime) -> int:
    """How many of the account's top-ups started since `since` are still pending (not paid, expired)."""
    cur = await conn.execute(
        "select count(*) from topups where account_id = %s and status = 'pending' and created_at >= %s",
        (account_id, since),
    )
    return (await cur.fetchone())[0]


class CreditRow(msgspec.Struct, frozen=True):
    time: datetime
    amount: int  # pico-USD; negative when taken back
    kind: str  # a key of CREDIT_KINDS
    reason: str
    by: str


# What moved an account's credits, by what `credit_grants` records of it: who granted (an operator's grant is
# by "operator"; commands/autorefill.py grants by "auto-refill"), and for a top-up its reason, "top-up via
# {provider} ({reference})" (commands/topups.py), found among the account's top-ups. Money taken back says why:
# "refund of ..." or "dispute ..." (held ones: "refund or dispute ...").
CREDIT_KINDS = {
    "operator": "operator grant",
    "card": "card top-up",
    "bank_transfer": "bank transfer",
    "auto_refill": "auto-refill charge",
    "refund": "refund",
    "dispute": "dispute",
    "taken_back": "refund or dispute",
    "grant": "grant",
}
_TOPUP_KINDS = {"stripe": "card", "bank_transfer": "bank_transfer"}


def credit_kind(amount: int, reason: str, by: str, topup_provider: str | None) -> str:
    if amount < 0:
        for prefix, kind in (("refund or dispute", "taken_back"), ("refund", "refund"), ("dispute", "dispute")):
            if reason.startswith(prefix):
                return kind
        return "taken_back"
    if by == "auto-refill":
        return "auto_refill"
    if topup_provider is not None:
        return _TOPUP_KINDS.get(topup_provider, "grant")
    return "operator" if by == "operator" else "grant"


async def credit_history(conn: psycopg.AsyncConnection, account_id: UUID, limit: int) -> list[CreditRow]:
    """The account's newest `limit` credit movements, newest first."""
    cur = await conn.execute(
        """select g.time, g.amount, g.reason, g.granted_by, t.provider from credit_grants g
           left join lateral (
               select provider from topups t where t.account_id = g.account_id
                 and g.reason = 'top-up via ' || t.provider || ' (' || t.reference || ')' limit 1
           ) t on true
           where g.account_id = %s order by g.position desc limit %s""",
        (account_id, limit),
    )
    return [
        CreditRow(time, int(amount), credit_kind(int(amount), reason, by, provider), reason, by)
        for time, amount, reason, by, provider in await cur.fetchall()
    ]


TOPUP_STATUSES = {  # what GET /admin/topups?status= narrows to
    "pending": "t.status = 'pending'",
    "succeeded": "t.status = 'succeeded'",
    "expired": "t.status = 'expired'",
    "rejected": "t.status = 'rejected'",
    "refunded": "t.refunded > 0",
    "disputed": "t.disputed > 0",
    "all": "true",
}


class AccountTopUp(msgspec.Struct, frozen=True):
    account_id: UUID
    email: str | None
    topup: TopUpRow


async def topups_by_status(conn: psycopg.AsyncConnection, status: str, limit: int) -> list[AccountTopUp]:
    """Every account's top-ups in one of TOPUP_STATUSES, newest first, with the account's email."""
    cur = await conn.execute(
        f"""select t.account_id, a.email, t.topup_id, t.provider, t.reference, t.amount, t.status, t.received,
                   t.refunded, t.disputed, t.failures, t.last_failure, t.expires_at, t.created_at
            from topups t left join accounts a on a.account_id = t.account_id
            where {TOPUP_STATUSES[status]} order by t.created_at desc limit %s""",
        (limit,),
    )
    return [
        AccountTopUp(
            r[0],
            r[1],
            TopUpRow(r[2], r[3], r[4], int(r[5]), r[6], int(r[7]), int(r[8]), int(r[9]), r[10], r[11], r[12], r[13]),
        )
        for r in await cur.fetchall()
    ]


async def balances_of(conn: psycopg.AsyncConnection, account_ids: list[UUID]) -> dict[UUID, Balance]:
    cur = await conn.execute(
        "select account_id, credits, spend from balances where account_id = any(%s)", (account_ids,)
    )
    return {r[0]: Balance(int(r[1]), int(r[2])) for r in await cur.fetchall()}
