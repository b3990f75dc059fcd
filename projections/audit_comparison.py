"""What `mesh audit` compares (projections/audit.py replays and runs the comparison): each read model's tables,
which of their rows an account or an instant selects, and what differs between a live row and its replayed one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

ACCOUNT_KEYS = "key_id in (select key_id from {s}api_keys where account_id = %(account)s)"
ACCOUNT_TEMPLATES = "template_id in (select template_id from {s}templates where account_id = %(account)s)"


@dataclass(frozen=True)
class AuditedTable:
    """How one table of a read model is compared.

    `account`: the SQL condition choosing one account's rows (`{s}` is the schema of the side it runs on), None
    when the table holds no account's rows. `at`: the condition choosing the rows that were final at `%(at)s`,
    None when the table is not compared at an instant. `rows`: a condition every compared row meets (both
    sides), for rows that legitimately differ between a live model and a replay (each says why where listed).

    Every column is compared: each is derived from the events alone (no column holds when a row was applied;
    positions and `checked_at` live in `projection_positions`, which is not compared)."""

    read_model: str
    table: str
    key: tuple[str, ...]
    account: str | None = "account_id = %(account)s"
    at: str | None = None
    rows: str | None = None


TABLES: tuple[AuditedTable, ...] = (
    AuditedTable("directory", "accounts", ("account_id",), at="created_at <= %(at)s"),
    AuditedTable("directory", "management_tokens", ("token_hash",)),
    AuditedTable("directory", "api_keys", ("key_id",)),
    AuditedTable("directory", "api_key_secrets", ("key_hash",), account=ACCOUNT_KEYS),
    AuditedTable("directory", "api_key_events", ("key_id", "version"), account=ACCOUNT_KEYS, at="time <= %(at)s"),
    AuditedTable("directory", "api_key_states", ("key_id", "version"), account=ACCOUNT_KEYS, at="time <= %(at)s"),
    AuditedTable("directory", "invites", ("invite_id",), account="used_by = %(account)s"),
    AuditedTable("directory", "operator_actions", ("position",), at="time <= %(at)s"),
    # at an instant: the live side is each account's balance_at (see audit()); accounts with nothing yet are left out
    AuditedTable("billing", "balances", ("account_id",), at="credits <> 0 or spend <> 0"),
    AuditedTable("billing", "key_spend", ("key_id",)),
    # Billing keeps a row per request for RECENT_DAYS and drops a month by the stream time of the batch that
    # applies (projections/billing_projection.py): the live model's batches are not the replay's, so the months at
    # that edge may still be there on one side only. Rows of months within RECENT_DAYS of now are compared.
    AuditedTable("billing", "usage_recent", ("trace_id", "time"), at="time <= %(at)s", rows="time >= %(recent_from)s"),
    AuditedTable(
        "billing",
        "spend_hourly",
        ("account_id", "time", "key_id", "provider", "model"),
        at="time + interval '1 hour' <= %(at)s",
    ),
    AuditedTable(
        "billing",
        "spend_daily",
        ("account_id", "time", "key_id", "provider", "model"),
        at="time + interval '1 day' <= %(at)s",
    ),
    AuditedTable("billing", "credit_grants", ("position",), at="time <= %(at)s"),
    AuditedTable("billing", "leases", ("lease_id",)),
    AuditedTable("billing", "topups", ("topup_id",)),
    AuditedTable("billing", "auto_refills", ("account_id",)),
    AuditedTable("billing", "key_refusals", ("refusal_id", "code"), at="until <= %(at)s"),
    AuditedTable("catalog", "model_overrides", ("model_id",), account=None),
    AuditedTable("catalog", "model_changes", ("position",), account=None, at="time <= %(at)s"),
    AuditedTable("catalog", "added_models", ("model_id",), account=None, at="added_at <= %(at)s"),
    AuditedTable("templates", "templates", ("template_id",)),
    AuditedTable(
        "templates",
        "template_versions",
        ("template_id", "version"),
        account=ACCOUNT_TEMPLATES,
        at="created_at <= %(at)s",
    ),
    # Retention (MESH_LOG_RETENTION_DAYS) drops whole months of the live logs by the clock, once an hour: the
    # months it may have dropped by now are left out on both sides; every later row is compared.
    AuditedTable("logs", "logs", ("trace_id", "time"), at="time <= %(at)s", rows="time >= %(kept_from)s"),
)


class Difference(msgspec.Struct, frozen=True):
    read_model: str
    table: str
    key: str  # column=value, ...
    field: str  # a column, or "row" when the row is on one side only
    live: Any
    replayed: Any

    def line(self) -> str:
        return f"{self.read_model}.{self.table} {self.key}: {self.field} live {self.live} replayed {self.replayed}"


def differences(t: AuditedTable, live: dict | None, replayed: dict | None) -> list[Difference]:
    """What differs between a live row and its replayed one, field by field; a row on one side only is one."""
    row = live if live is not None else replayed
    assert row is not None
    key = ", ".join(f"{k}={row[k]}" for k in t.key)
    if live is None or replayed is None:
        return [
            Difference(
                t.read_model,
                t.table,
                key,
                "row",
                "present" if live is not None else "absent",
                "present" if replayed is not None else "absent",
            )
        ]
    return [
        Difference(t.read_model, t.table, key, field, live.get(field), replayed.get(field))
        for field in sorted(set(live) | set(replayed))
        if live.get(field) != replayed.get(field)
    ]
