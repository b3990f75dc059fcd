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
from psycopg.types.json import Jsonb

from domain.account import Account
from domain.apikey import KEY_CHANGES, ApiKey
from domain.catalog import ModelSettings
from domain.invite import Invite
from domain.topup import TopUp
from domain.events import event_names, events_of
from domain.money import pico_to_usd
from projections.readmodel import Envelope

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
_AUDIT_HIDDEN = {*_PRIVATE_FIELDS, "operator", "by", "granted_by", "debited_by"}


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


class Directory:
    name = "directory"
    tables = (
        "accounts",
        "management_tokens",
        "api_keys",
        "api_key_secrets",
        "api_key_events",
        "api_key_states",
        "invites",
        "operator_actions",
    )

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t["accounts"]} (
                account_id uuid primary key,
                email text not null unique,
                created_at timestamptz not null
            );
            create table if not exists {t["management_tokens"]} (
                token_hash text primary key,
                account_id uuid not null,
                issued_at timestamptz not null
            );
            -- null: issued before tokens expired (see LEGACY_TOKEN_LIFETIME)
            alter table {t["management_tokens"]} add column if not exists expires_at timestamptz;
            create index if not exists {t["management_tokens"]}_account on {t["management_tokens"]} (account_id);
            create table if not exists {t["api_keys"]} (
                key_id uuid primary key,
                account_id uuid not null,
                label text not null,
                prefix text not null,
                spend_cap numeric(40, 0),
                default_model text,
                status text not null default 'active',
                created_at timestamptz not null,
                allowed_models text[],
                expires_at timestamptz,
                cap_reset text,
                updated_at timestamptz not null
            );
            create table if not exists {t["api_key_secrets"]} (
                key_hash text primary key,
                key_id uuid not null,
                valid_until timestamptz  -- null: valid while the key is
            );
            create index if not exists {t["api_keys"]}_account on {t["api_keys"]} (account_id, created_at);
            alter table {t["api_keys"]} add column if not exists fit_to_budget boolean not null default false;
            alter table {t["api_keys"]} add column if not exists rpm_limit integer;
            alter table {t["api_keys"]} add column if not exists tpm_limit bigint;
            create table if not exists {t["api_key_events"]} (
                key_id uuid not null,
                version int not null,
                type text not null,
                time timestamptz not null,
                by text not null,
                details jsonb not null,
                primary key (key_id, version)
            );
            alter table {t["accounts"]} add column if not exists operator boolean not null default false;
            alter table {t["accounts"]} add column if not exists suspended text;  -- the reason, while suspended
            alter table {t["accounts"]} add column if not exists suspended_at timestamptz;
            create table if not exists {t["operator_actions"]} (
                position bigint primary key,
                time timestamptz not null,
                operator text not null,
                action text not null,
                event text not null,
                target text not null,
                account_id uuid,
                details jsonb not null
            );
            create index if not exists {t["operator_actions"]}_account
                on {t["operator_actions"]} (account_id, position);
            -- a key's settings after each change to them, to tell what they were at any instant
            create table if not exists {t["api_key_states"]} (
                key_id uuid not null,
                version int not null,
                time timestamptz not null,
                label text not null,
                prefix text not null,
                spend_cap numeric(40, 0),
                default_model text,
                status text not null,
                allowed_models text[],
                expires_at timestamptz,
                cap_reset text,
                fit_to_budget boolean not null,
                rpm_limit integer,
                tpm_limit bigint,
                primary key (key_id, version)
            );
            create table if not exists {t["invites"]} (
                invite_id uuid primary key,
                prefix text not null,
                created_at timestamptz not null,
                expires_at timestamptz,
                by text not null,
                used_by uuid,
                used_at timestamptz
            );
        """)

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        for item in batch:
            e = item.event
            cls = type(e)
            if cls in OPERATOR_ACTIONS and (operator := acting_operator(e)) is not None:
                await self._record_action(cur, t, item, operator)
            if cls in KEY_HISTORY:
                await self._add_to_history(cur, t, item)
            handler = self._HANDLERS.get(cls)
            if handler is not None:
                await handler(self, cur, t, e)

    async def _add_to_history(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope) -> None:
        e = item.event
        details = public_details(e)
        await cur.execute(
            f"""insert into {t["api_key_events"]} (key_id, version, type, time, by, details)
                values (%s, %s, %s, %s, %s, %s) on conflict do nothing""",
            (
                e.originator_id,
                e.originator_version,
                item.topic,
                e.timestamp,
                details.pop("by", "account"),
                Jsonb(details),
            ),
        )

    async def _suspension(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        suspended = isinstance(e, Account.Suspended)
        await cur.execute(
            f"update {t['accounts']} set suspended = %s, suspended_at = %s where account_id = %s",
            (e.reason if suspended else None, e.timestamp if suspended else None, e.originator_id),
        )

    async def _operator_role(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"update {t['accounts']} set operator = %s where account_id = %s",
            (isinstance(e, Account.OperatorGranted), e.originator_id),
        )

    async def _invite_created(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"""insert into {t["invites"]} (invite_id, prefix, created_at, expires_at, by)
                values (%s, %s, %s, %s, %s)""",
            (e.originator_id, e.prefix, e.timestamp, e.expires_at, e.by),
        )

    async def _invite_used(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"update {t['invites']} set used_by = %s, used_at = %s where invite_id = %s",
            (e.account_id, e.timestamp, e.originator_id),
        )

    async def _registered(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"insert into {t['accounts']} (account_id, email, created_at) values (%s, %s, %s)",
            (e.originator_id, e.email, e.timestamp),
        )
        await self._issue_token(cur, t, e, e.token_expires_at)

    async def _token_issued(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await self._issue_token(cur, t, e, e.expires_at)

    async def _token_renewed(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"update {t['management_tokens']} set expires_at = %s where token_hash = %s",
            (e.expires_at, e.token_hash),
        )

    async def _token_revoked(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(f"delete from {t['management_tokens']} where token_hash = %s", (e.token_hash,))

    async def _password_changed(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        """Every token issued before it stops working."""
        await cur.execute(f"delete from {t['management_tokens']} where account_id = %s", (e.originator_id,))

    async def _key_created(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"""insert into {t["api_keys"]} (key_id, account_id, label, prefix, spend_cap, default_model,
                created_at, allowed_models, expires_at, cap_reset, updated_at, fit_to_budget, rpm_limit,
                tpm_limit)
                values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (
                e.originator_id,
                e.account_id,
                e.label,
                e.prefix,
                e.spend_cap,
                e.default_model,
                e.timestamp,
                e.allowed_models,
                e.expires_at,
                e.cap_reset,
                e.timestamp,
                e.fit_to_budget,
                e.rpm_limit,
                e.tpm_limit,
            ),
        )
        await cur.execute(
            f"insert into {t['api_key_secrets']} (key_hash, key_id) values (%s, %s)",
            (e.key_hash, e.originator_id),
        )
        await self._keep_state(cur, t, e)

    async def _key_rotated(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await cur.execute(
            f"update {t['api_key_secrets']} set valid_until = %s where key_hash = %s",
            (e.previous_valid_until, e.previous_hash),
        )
        await cur.execute(
            f"insert into {t['api_key_secrets']} (key_hash, key_id) values (%s, %s)",
            (e.key_hash, e.originator_id),
        )
        await self._set(cur, t, e, prefix=e.prefix)

    async def _key_changed(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        await self._set(cur, t, e, **KEY_CHANGES[type(e)](e))

    # The one table of what the directory does with each event (besides the audit and the keys' histories).
    _HANDLERS = {
        Account.Suspended: _suspension,
        Account.Resumed: _suspension,
        Account.OperatorGranted: _operator_role,
        Account.OperatorRevoked: _operator_role,
        Invite.Created: _invite_created,
        Invite.Used: _invite_used,
        Account.Registered: _registered,
        Account.TokenIssued: _token_issued,
        Account.TokenRenewed: _token_renewed,
        Account.TokenRevoked: _token_revoked,
        Account.PasswordChanged: _password_changed,
        ApiKey.Created: _key_created,
        ApiKey.Rotated: _key_rotated,
        **dict.fromkeys(KEY_CHANGES, _key_changed),
    }
    topics = event_names({*_HANDLERS, *OPERATOR_ACTIONS, *KEY_HISTORY})  # the events it reads

    async def _record_action(self, cur: psycopg.AsyncCursor, t: dict[str, str], item: Envelope, operator: str) -> None:
        e = item.event
        # the account acted on (a top-up's or an invite's act names its own aggregate); a model by its id
        target = e.model_id if isinstance(e, MODEL_ACTIONS) else str(e.originator_id)
        account = e.originator_id if isinstance(e, ACCOUNT_ACTIONS) else None
        details = {k: v for k, v in vars(e).items() if k not in _AUDIT_HIDDEN and k not in ("model_id", "code_hash")}
        if "amount" in details:
            details["amount_usd"] = pico_to_usd(details.pop("amount"))
        await cur.execute(
            f"""insert into {t["operator_actions"]} (position, time, operator, action, event, target, account_id,
                details) values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing""",
            (
                item.position,
                e.timestamp,
                operator,
                OPERATOR_ACTIONS[type(e)],
                item.topic,
                target,
                account,
                Jsonb(msgspec.to_builtins(details)),
            ),
        )

    async def _issue_token(self, cur: psycopg.AsyncCursor, t: dict[str, str], e, expires_at: datetime | None) -> None:
        await cur.execute(
            f"insert into {t['management_tokens']} (token_hash, account_id, issued_at, expires_at) "
            "values (%s, %s, %s, %s)",
            (e.token_hash, e.originator_id, e.timestamp, expires_at),
        )

    async def _set(self, cur: psycopg.AsyncCursor, t: dict[str, str], e, **columns) -> None:
        assignments = ", ".join(f"{name} = %s" for name in columns)
        await cur.execute(
            f"update {t['api_keys']} set {assignments}, updated_at = %s where key_id = %s",
            (*columns.values(), e.timestamp, e.originator_id),
        )
        await self._keep_state(cur, t, e)

    async def _keep_state(self, cur: psycopg.AsyncCursor, t: dict[str, str], e) -> None:
        """The key's settings as this event left them, kept under its version and time."""
        await cur.execute(
            f"""insert into {t["api_key_states"]} (key_id, version, time, {_STATE_COLUMNS})
                select key_id, %s, %s, {_STATE_COLUMNS} from {t["api_keys"]} where key_id = %s
                on conflict do nothing""",
            (e.originator_version, e.timestamp, e.originator_id),
        )


_STATE_COLUMNS = (
    "label, prefix, spend_cap, default_model, status, allowed_models, expires_at, cap_reset, fit_to_budget, "
    "rpm_limit, tpm_limit"
)

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
