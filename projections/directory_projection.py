"""The directory read model's projection: how each account, token, key, invite and operator event changes its
tables (projections/directory.py holds what they mean and the queries that read them)."""

from __future__ import annotations

from datetime import datetime

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from domain.account import Account
from domain.apikey import KEY_CHANGES, ApiKey
from domain.events import event_names
from domain.invite import Invite
from domain.money import pico_to_usd
from projections.directory import (
    ACCOUNT_ACTIONS,
    KEY_HISTORY,
    MODEL_ACTIONS,
    OPERATOR_ACTIONS,
    AUDIT_HIDDEN,
    acting_operator,
    public_details,
)
from projections.readmodel import Envelope


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
        details = {k: v for k, v in vars(e).items() if k not in AUDIT_HIDDEN and k not in ("model_id", "code_hash")}
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
