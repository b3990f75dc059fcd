"""What subscribers of the event log see: which events are public, which of their fields, and whose they are.

A subscriber (`GET /api/events`, `GET /admin/events`) gets the events of the registry (domain/events.py) with the
fields docs/events.md lists, except secrets' hashes (a hash of a password, a management token, a key's secret or
an invite code is never sent anywhere) and bookkeeping that says nothing a subscriber can use: budget leases
(a gateway's slices of a cap, many a minute), the uniqueness claims (`email.claimed`, `template_name.*`) and
quota holdings (`holdings.*`), whose changes the key, template and account events already say.
Everything here is decided by the event's class.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, cast
from uuid import UUID

import msgspec

from domain.account import Account, EmailClaim
from domain.apikey import ApiKey
from domain.catalog import ModelSettings
from domain.events import EVENT_TYPES
from domain.invite import Invite
from domain.leases import ExtendsLease, GrantsLease, SettlesLease
from domain.quota import Holdings
from domain.template import Template, TemplateName
from domain.topup import TopUp
from domain.usage import BodyRecorded, RequestsRefused, UsageRecorded
from domain.webhook import Webhooks

# Never sent: the classes below, whatever their fields.
BOOKKEEPING: tuple[type, ...] = (
    GrantsLease,
    SettlesLease,
    ExtendsLease,
    EmailClaim.Event,
    TemplateName.Event,
    Holdings.Event,
    Account.PasswordRehashed,  # the same password hashed again: nothing changed for its owner
    BodyRecorded,  # not the log: the bodies stream (MESH_LOG_BODIES)
)

# The operator's own aggregates: in the operator's stream only (no account owns them).
OPERATOR_ONLY: tuple[type, ...] = (ModelSettings.Event, Invite.Event)

# Fields left out of a public event: hashes of secrets.
HIDDEN_FIELDS: dict[type, frozenset[str]] = {
    Account.Registered: frozenset({"password_hash", "token_hash"}),
    Account.TokenIssued: frozenset({"token_hash"}),
    Account.TokenRenewed: frozenset({"token_hash"}),
    Account.TokenRevoked: frozenset({"token_hash"}),
    Account.PasswordChanged: frozenset({"password_hash"}),
    ApiKey.Created: frozenset({"key_hash"}),
    ApiKey.Rotated: frozenset({"key_hash", "previous_hash"}),
    Invite.Created: frozenset({"code_hash"}),
}

# The aggregates an account owns whose first event names the account (`account_id`); their later events are the
# account's too. The account's own aggregate and its webhooks are found by id (`own_aggregates`).
OPENED_WITH_ACCOUNT: tuple[type, ...] = (ApiKey.Created, Template.Created, TopUp.Requested)

# Envelope fields of an aggregate event that a public event carries beside its own (as `aggregate_id`, `version`).
_ENVELOPE = frozenset({"originator_id", "originator_version", "originator_topic"})


def is_public(cls: type) -> bool:
    return not issubclass(cls, BOOKKEEPING)


def is_account_event(cls: type) -> bool:
    """Whether an account's own stream may carry events of this class."""
    return is_public(cls) and not issubclass(cls, OPERATOR_ONLY)


PUBLIC_EVENT_NAMES: tuple[str, ...] = tuple(name for name, cls in EVENT_TYPES.items() if is_public(cls))
ACCOUNT_EVENT_NAMES: tuple[str, ...] = tuple(name for name, cls in EVENT_TYPES.items() if is_account_event(cls))


def own_aggregates(account_id: UUID) -> set[UUID]:
    """The ids of the aggregates an account owns from its start: itself and its webhook endpoints."""
    return {account_id, Webhooks.create_id(account_id)}


def opened_for(event: Any) -> UUID | None:
    """The account a stand-alone event (usage) or the first event of an account's key, template or top-up names."""
    if isinstance(event, (UsageRecorded, RequestsRefused, *OPENED_WITH_ACCOUNT)):
        opened: Any = event
        account_id: UUID = opened.account_id
        return account_id
    return None


def visible_fields(cls: type) -> tuple[str, ...]:
    """The fields of an event class a subscriber sees: the registry's, without the hidden ones."""
    if issubclass(cls, msgspec.Struct):
        names: Iterable[str] = cls.__struct_fields__
    else:
        names = [f.name for f in dataclasses.fields(cast(Any, cls))]
    hidden = HIDDEN_FIELDS.get(cls, frozenset()) | _ENVELOPE
    return tuple(name for name in names if name not in hidden)


def public_fields(event: Any) -> dict[str, Any]:
    """The event's own fields as the registry documents them, without the hidden ones."""
    return {name: getattr(event, name) for name in visible_fields(type(event))}
