"""The event registry: every event on the stream has a stable name.

The name travels in the message header `Mesh-Topic`; the body is the event's
fields as JSON (msgspec). Versioning rule: names never change, a field never
changes type, and a new field must have a default, so old events always decode.
"""

from __future__ import annotations

from typing import Any, Iterable
from uuid import UUID

import msgspec

from domain.account import Account, EmailClaim
from domain.apikey import ApiKey
from domain.catalog import ModelSettings
from domain.invite import Invite
from domain.quota import Holdings
from domain.template import Template, TemplateName
from domain.topup import TopUp
from domain.usage import BodyRecorded, RequestsRefused, UsageRecorded
from domain.webhook import Webhooks

EVENT_TYPES: dict[str, type] = {
    "account.registered": Account.Registered,
    "account.token_issued": Account.TokenIssued,
    "account.credits_granted": Account.CreditsGranted,
    "account.credits_debited": Account.CreditsDebited,
    "account.stripe_customer_linked": Account.StripeCustomerLinked,
    "account.auto_refill_configured": Account.AutoRefillConfigured,
    "account.auto_refill_disabled": Account.AutoRefillDisabled,
    "account.auto_refill_card_saved": Account.AutoRefillCardSaved,
    "account.auto_refill_triggered": Account.AutoRefillTriggered,
    "account.auto_refill_succeeded": Account.AutoRefillSucceeded,
    "account.auto_refill_failed": Account.AutoRefillFailed,
    "account.auto_refill_armed": Account.AutoRefillArmed,
    "account.budget_leased": Account.BudgetLeased,
    "account.lease_settled": Account.LeaseSettled,
    "account.lease_extended": Account.LeaseExtended,
    "account.token_renewed": Account.TokenRenewed,
    "account.token_revoked": Account.TokenRevoked,
    "account.password_changed": Account.PasswordChanged,
    "account.password_rehashed": Account.PasswordRehashed,
    "account.operator_granted": Account.OperatorGranted,
    "account.operator_revoked": Account.OperatorRevoked,
    "account.suspended": Account.Suspended,
    "account.resumed": Account.Resumed,
    "email.claimed": EmailClaim.Claimed,
    "key.created": ApiKey.Created,
    "key.relabeled": ApiKey.Relabeled,
    "key.spend_cap_changed": ApiKey.SpendCapChanged,
    "key.default_model_changed": ApiKey.DefaultModelChanged,
    "key.allowed_models_changed": ApiKey.AllowedModelsChanged,
    "key.expiry_changed": ApiKey.ExpiryChanged,
    "key.disabled": ApiKey.Disabled,
    "key.enabled": ApiKey.Enabled,
    "key.revoked": ApiKey.Revoked,
    "key.rotated": ApiKey.Rotated,
    "key.budget_leased": ApiKey.BudgetLeased,
    "key.lease_settled": ApiKey.LeaseSettled,
    "key.lease_extended": ApiKey.LeaseExtended,
    "key.spend_period_started": ApiKey.SpendPeriodStarted,
    "key.fit_to_budget_changed": ApiKey.FitToBudgetChanged,
    "key.rate_limits_changed": ApiKey.RateLimitsChanged,
    "model.registered": ModelSettings.Registered,
    "model.price_changed": ModelSettings.PriceChanged,
    "model.added": ModelSettings.Added,
    "model.enabled": ModelSettings.Enabled,
    "model.disabled": ModelSettings.Disabled,
    "topup.requested": TopUp.Requested,
    "topup.succeeded": TopUp.Succeeded,
    "topup.failed": TopUp.Failed,
    "topup.expired": TopUp.Expired,
    "topup.refunded": TopUp.Refunded,
    "topup.disputed": TopUp.Disputed,
    "topup.refund_held": TopUp.RefundHeld,
    "topup.dispute_held": TopUp.DisputeHeld,
    "topup.rejected": TopUp.Rejected,
    "invite.created": Invite.Created,
    "invite.used": Invite.Used,
    "holdings.opened": Holdings.Opened,
    "holdings.key_added": Holdings.KeyAdded,
    "holdings.key_removed": Holdings.KeyRemoved,
    "holdings.template_added": Holdings.TemplateAdded,
    "holdings.template_removed": Holdings.TemplateRemoved,
    "usage.recorded": UsageRecorded,
    "usage.refused": RequestsRefused,
    "template.created": Template.Created,
    "template.version_saved": Template.VersionSaved,
    "template.renamed": Template.Renamed,
    "template.labeled": Template.Labeled,
    "template.unlabeled": Template.Unlabeled,
    "template.archived": Template.Archived,
    "template_name.claimed": TemplateName.Claimed,
    "template_name.reclaimed": TemplateName.Reclaimed,
    "template_name.released": TemplateName.Released,
    "webhooks.opened": Webhooks.Opened,
    "webhook.endpoint_added": Webhooks.EndpointAdded,
    "webhook.endpoint_updated": Webhooks.EndpointUpdated,
    "webhook.endpoint_removed": Webhooks.EndpointRemoved,
    "usage.body_recorded": BodyRecorded,  # on the bodies stream (see commands.stream.bodies_stream)
}

EVENT_NAMES: dict[type, str] = {cls: name for name, cls in EVENT_TYPES.items()}
# A decoder per stand-alone event (a msgspec Struct): made once instead of on every decode, which a replay does
# millions of times
_STRUCT_DECODERS: dict[str, msgspec.json.Decoder[Any]] = {
    name: msgspec.json.Decoder(cls) for name, cls in EVENT_TYPES.items() if issubclass(cls, msgspec.Struct)
}


class UnknownEvent(LookupError):
    pass


def event_type(name: str) -> type:
    try:
        return EVENT_TYPES[name]
    except KeyError:
        raise UnknownEvent(f"no event named {name!r} in the event registry") from None


def event_name(cls: type) -> str:
    try:
        return EVENT_NAMES[cls]
    except KeyError:
        raise UnknownEvent(f"{cls.__qualname__} is not in the event registry") from None


def event_names(classes: Iterable[type]) -> frozenset[str]:
    """The names of these event classes: the topics a reader of exactly these events reads."""
    return frozenset(map(event_name, classes))


def event_types(names: Iterable[str]) -> tuple[type, ...]:
    """The classes of these event names, in the order given."""
    return tuple(map(event_type, names))


def events_of(owner: type) -> tuple[type, ...]:
    """Every event class an aggregate (or event family) declares inside itself, in catalogue order."""
    prefix = f"{owner.__qualname__}."
    return tuple(cls for cls in EVENT_TYPES.values() if cls.__qualname__.startswith(prefix))


def decode_event(name: str, body: bytes, originator_id: Any, originator_version: int) -> Any:
    """Rebuild an event from its stored form: registered name, JSON body and envelope fields.

    Aggregate events (eventsourcing dataclasses) get their envelope fields back from
    the message headers; stand-alone events (msgspec Structs) carry everything in the body.
    """
    decoder = _STRUCT_DECODERS.get(name)
    if decoder is not None:
        return decoder.decode(body)
    cls = event_type(name)
    raw = msgspec.json.decode(body)
    raw["originator_id"] = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    raw["originator_version"] = originator_version
    return msgspec.convert(raw, type=cls)


# The wire contract of the stream: every message carries these headers, and
# its subject names the aggregate (one subject per aggregate) or the account.
HEADER_TOPIC = "Mesh-Topic"
HEADER_ORIGINATOR_ID = "Mesh-Originator-Id"
HEADER_ORIGINATOR_VERSION = "Mesh-Originator-Version"


def subject_prefix(stream: str) -> str:
    return stream.lower()


def bodies_subject(stream: str, account_id: Any) -> str:
    return f"{subject_prefix(stream)}-bodies.{account_id}"


def snapshot_subject(stream: str, originator_id: Any) -> str:
    return f"{subject_prefix(stream)}-snapshots.{originator_id}"


def aggregate_subject(stream: str, originator_id: Any) -> str:
    return f"{subject_prefix(stream)}.agg.{originator_id}"


def usage_subject(stream: str, account_id: Any) -> str:
    return f"{subject_prefix(stream)}.usage.{account_id}"


# The events the gateway publishes to an account's usage subject; every other event of the log is on its
# aggregate's subject (usage.body_recorded is on the bodies stream, not the log).
USAGE_SUBJECT_EVENTS = event_names((UsageRecorded, RequestsRefused))
LOG_EVENTS = frozenset(EVENT_TYPES) - event_names((BodyRecorded,))


def log_subjects(stream: str, topics: frozenset[str]) -> str | None:
    """The subject filter of the log that holds every event named in `topics`: the usage subjects, the aggregate
    subjects, or None (the whole stream) when they need both, or name an event that is not on the log."""
    if not topics or not topics <= LOG_EVENTS:
        return None
    usage = topics & USAGE_SUBJECT_EVENTS
    if usage and usage != topics:
        return None
    return usage_subject(stream, ">") if usage else aggregate_subject(stream, ">")
