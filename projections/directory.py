"""Directory read model: accounts (with their operator role and suspension), their management tokens, API keys
and their histories, invite codes, and the operators' actions (the audit).

Authentication reads it: a management token or an API key is looked up by hash. A key's history is kept here
(without the gateways' budget bookkeeping, which grows with every lease) so its page reads one page of it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from uuid import UUID

import msgspec
import psycopg

from domain.account import Account
from domain.apikey import ApiKey
from domain.catalog import ModelSettings
from domain.invite import Invite
from domain.topup import TopUp
from domain.events import events_of
from domain.money import pico_to_usd

# A key's events that are the gateways' bookkeeping, not changes someone made: left out of its history.
BUDGET_EVENTS = frozenset({ApiKey.BudgetLeased, ApiKey.LeaseExtended, ApiKey.LeaseSettled, ApiKey.SpendPeriodStarted})
KEY_HISTORY = frozenset(events_of(ApiKey)) - BUDGET_EVENTS  # the events a key's history lists
_PRIVATE_FIELDS = {
    "originator_id",
    "originator_version",
    "timestamp",
    "originator_topic",
    "key_hash",
    "previous_hash",
    "account_id",
}


def public_details(event) -> dict:
    """An event's fields without secrets (hashes) or envelope; money as USD strings."""
    details = {k: v for k, v in vars(event).items() if k not in _PRIVATE_FIELDS}
    if "spend_cap" in details:
        cap = details.pop("spend_cap")
        details["spend_cap_usd"] = pico_to_usd(cap) if cap is not None else None
    return msgspec.to_builtins(details)


class KeyEvent(msgspec.Struct):
    type: str
    time: datetime
    version: int
    by: str  # account | operator | gateway
    details: dict


class InviteRow(msgspec.Struct):
    invite_id: UUID
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    by: str
    used_by: UUID | None
    used_at: datetime | None


# The events an operator's act appends (each names the acting operator), and what the audit calls the act.
OPERATOR_ACTIONS: dict[type, str] = {
    Account.CreditsGranted: "credits granted",
    Account.CreditsDebited: "credits taken back",
    Account.Suspended: "account suspended",
    Account.Resumed: "account resumed",
    Account.OperatorGranted: "operator role given",
    Account.OperatorRevoked: "operator role taken",
    Invite.Created: "invite created",
    TopUp.Succeeded: "transfer confirmed",
    TopUp.Rejected: "transfer rejected",
    ModelSettings.Added: "model added",
    ModelSettings.PriceChanged: "price changed",
    ModelSettings.Enabled: "model enabled",
    ModelSettings.Disabled: "model disabled",
}
ACCOUNT_ACTIONS = tuple(cls for cls in OPERATOR_ACTIONS if cls.__qualname__.startswith("Account."))
MODEL_ACTIONS = (ModelSettings.Added, ModelSettings.PriceChanged, ModelSettings.Enabled, ModelSettings.Disabled)
AUDIT_HIDDEN = {*_PRIVATE_FIELDS, "operator", "by", "granted_by", "debited_by"}


def acting_operator(event) -> str | None:
    """Who of the operators did it (an account id, "token", or "cli" for a role given on the command line);
    None: not an operator's act (a provider's payment, a grant made by a top-up)."""
    if isinstance(event, (Account.OperatorGranted, Account.OperatorRevoked)):
        return event.by
    return getattr(event, "operator", None)


class OperatorAction(msgspec.Struct, frozen=True):
    position: int
    time: datetime
    operator: str  # an account id, "token" (the shared operator token) or "cli"
    operator_email: str | None  # the operator's account's, when it is one
    action: str  # a value of OPERATOR_ACTIONS
    event: str
    target: str  # the account id, top-up id or model id acted on
    account_id: UUID | None  # the account acted on (for a top-up: its account), if any
    details: dict


class AccountRow(msgspec.Struct, frozen=True):
    account_id: UUID
    email: str
    created_at: datetime
    operator: bool
    suspended: str | None  # the reason, while suspended
    suspended_at: datetime | None


class KeyRow(msgspec.Struct, frozen=True):
    key_id: UUID
    account_id: UUID
    label: str
    prefix: str
    spend_cap: int | None
    default_model: str | None
    status: str
    created_at: datetime
    allowed_models: list[str] | None
    expires_at: datetime | None
    cap_reset: str | None
    updated_at: datetime
    fit_to_budget: bool = False
    rpm_limit: int | None = None
    tpm_limit: int | None = None


# Queries (they read the views, i.e. the generation in service).

# Tokens issued before they expired (no expiry in their event) live this long after they were issued.
LEGACY_TOKEN_LIFETIME = timedelta(days=30)


async def session_for_token(conn: psycopg.AsyncConnection, token_hash: str) -> tuple[UUID, datetime] | None:
    """The account a live (not revoked, not expired) management token belongs to, and when it expires."""
    cur = await conn.execute(
        """select account_id, expires from (select account_id, coalesce(expires_at, issued_at + %s) as expires
           from management_tokens where token_hash = %s) t where expires > now()""",
        (LEGACY_TOKEN_LIFETIME, token_hash),
    )
    row = await cur.fetchone()
    return (row[0], row[1]) if row else None


async def account_for_token(conn: psycopg.AsyncConnection, token_hash: str) -> UUID | None:
    session = await session_for_token(conn, token_hash)
    return session[0] if session else None


async def account_exists(conn: psycopg.AsyncConnection, account_id: UUID) -> bool:
    cur = await conn.execute("select 1 from accounts where account_id = %s", (account_id,))
    return await cur.fetchone() is not None


_KEY_COLUMNS = (
    "k.key_id, k.account_id, k.label, k.prefix, k.spend_cap, k.default_model, k.status, k.created_at, "
    "k.allowed_models, k.expires_at, k.cap_reset, k.updated_at, k.fit_to_budget, k.rpm_limit, k.tpm_limit"
)


def _key_row(row: tuple) -> KeyRow:
    values = list(row)
    values[4] = int(values[4]) if values[4] is not None else None
    return KeyRow(*values)


async def keys_of(conn: psycopg.AsyncConnection, account_id: UUID) -> list[KeyRow]:
    cur = await conn.execute(
        f"select {_KEY_COLUMNS} from api_keys k where account_id = %s order by created_at", (account_id,)
    )
    return [_key_row(r) for r in await cur.fetchall()]


async def key_of(conn: psycopg.AsyncConnection, account_id: UUID, key_id: UUID) -> KeyRow | None:
    cur = await conn.execute(
        f"select {_KEY_COLUMNS} from api_keys k where account_id = %s and key_id = %s", (account_id, key_id)
    )
    row = await cur.fetchone()
    return _key_row(row) if row else None


async def key_at(conn: psycopg.AsyncConnection, account_id: UUID, key_id: UUID, at: datetime) -> KeyRow | None:
    """The key's settings as they were at `at` (`updated_at`: when they were last changed before it); None when
    the key did not exist yet, or belongs to another account."""
    cur = await conn.execute(
        """select s.key_id, k.account_id, s.label, s.prefix, s.spend_cap, s.default_model, s.status, k.created_at,
                  s.allowed_models, s.expires_at, s.cap_reset, s.time, s.fit_to_budget, s.rpm_limit, s.tpm_limit
           from api_key_states s join api_keys k on k.key_id = s.key_id
           where k.account_id = %s and s.key_id = %s and s.time <= %s order by s.version desc limit 1""",
        (account_id, key_id, at),
    )
    row = await cur.fetchone()
    return _key_row(row) if row else None


async def replaced_secret_until(conn: psycopg.AsyncConnection, key_id: UUID) -> datetime | None:
    """Until when a secret the key was rotated away from still works (its grace), if one still does."""
    cur = await conn.execute(
        "select max(valid_until) from api_key_secrets where key_id = %s and valid_until > now()", (key_id,)
    )
    row = await cur.fetchone()
    return row[0] if row else None


async def key_by_hash(conn: psycopg.AsyncConnection, key_hash: str) -> tuple[KeyRow, datetime | None, bool] | None:
    """The key a secret belongs to, until when the secret works (None: as long as the key), and whether its account
    is suspended, if the secret still works."""
    cur = await conn.execute(
        f"""select {_KEY_COLUMNS}, s.valid_until, a.suspended is not null from api_key_secrets s
            join api_keys k on k.key_id = s.key_id left join accounts a on a.account_id = k.account_id
            where s.key_hash = %s and (s.valid_until is null or s.valid_until > now())""",
        (key_hash,),
    )
    row = await cur.fetchone()
    return (_key_row(row[:-2]), row[-2], bool(row[-1])) if row else None


async def key_history(
    conn: psycopg.AsyncConnection, key_id: UUID, limit: int, before: int | None = None
) -> list[KeyEvent]:
    """One page of a key's history, newest first: `limit` events older than version `before` (None: the newest)."""
    cur = await conn.execute(
        """select type, time, version, by, details from api_key_events
           where key_id = %s and (%s::int is null or version < %s::int) order by version desc limit %s""",
        (key_id, before, before, limit),
    )
    return [KeyEvent(*row) for row in await cur.fetchall()]


async def invites(conn: psycopg.AsyncConnection, limit: int) -> list[InviteRow]:
    """The newest `limit` invite codes (never the codes themselves)."""
    cur = await conn.execute(
        "select invite_id, prefix, created_at, expires_at, by, used_by, used_at from invites "
        "order by created_at desc limit %s",
        (limit,),
    )
    return [InviteRow(*row) for row in await cur.fetchall()]


MAX_ACCOUNTS_FOUND = 100  # accounts one search answers at most
MAX_ACTIONS_LISTED = 200  # operator actions one page of the audit holds at most
_ACCOUNT_COLUMNS = "account_id, email, created_at, operator, suspended, suspended_at"


async def account_row(conn: psycopg.AsyncConnection, account_id: UUID) -> AccountRow | None:
    cur = await conn.execute(f"select {_ACCOUNT_COLUMNS} from accounts where account_id = %s", (account_id,))
    row = await cur.fetchone()
    return AccountRow(*row) if row else None


async def find_accounts(
    conn: psycopg.AsyncConnection, query: str, limit: int, after: str | None = None
) -> list[AccountRow]:
    """Accounts whose email contains `query` (any case) or whose id it is, by email, after the email `after`."""
    text = query.strip().lower()
    try:
        exact: UUID | None = UUID(text)
    except ValueError:
        exact = None
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    cur = await conn.execute(
        f"""select {_ACCOUNT_COLUMNS} from accounts
            where (email like %s or account_id = %s) and (%s::text is null or email > %s::text)
            order by email limit %s""",
        (pattern, exact, after, after, min(limit, MAX_ACCOUNTS_FOUND)),
    )
    return [AccountRow(*r) for r in await cur.fetchall()]


async def operators(conn: psycopg.AsyncConnection) -> list[AccountRow]:
    cur = await conn.execute(f"select {_ACCOUNT_COLUMNS} from accounts where operator order by email")
    return [AccountRow(*r) for r in await cur.fetchall()]


async def is_operator(conn: psycopg.AsyncConnection, account_id: UUID) -> bool:
    """An operator's account, not suspended (a suspended operator acts as none)."""
    cur = await conn.execute("select operator and suspended is null from accounts where account_id = %s", (account_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def operator_actions(
    conn: psycopg.AsyncConnection, limit: int, before: int | None = None, account_id: UUID | None = None
) -> list[OperatorAction]:
    """Operators' actions, newest first: `limit` of them older than position `before` (None: the newest), all or
    those on one account."""
    cur = await conn.execute(
        """select a.position, a.time, a.operator, o.email, a.action, a.event, a.target, a.account_id, a.details
           from operator_actions a left join accounts o on o.account_id::text = a.operator
           where (%s::bigint is null or a.position < %s::bigint) and (%s::uuid is null or a.account_id = %s::uuid)
           order by a.position desc limit %s""",
        (before, before, account_id, account_id, min(limit, MAX_ACTIONS_LISTED)),
    )
    return [OperatorAction(*r) for r in await cur.fetchall()]
