"""Per-account quotas: how many keys and templates an account may hold, and how many versions a template.

The counts live in an aggregate of their own per account (`Holdings`, id derived from the account), saved in
the same atomic append as the key or template it admits: two creates at the same time cannot both take the
last place, because the second one's append finds the holdings changed and is retried against the new count.
The account aggregate itself is left alone (budget leases change it all day).
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

import msgspec
from eventsourcing.domain import Aggregate, event

DEFAULT_MAX_KEYS = 100  # API keys not revoked, per account
DEFAULT_MAX_TEMPLATES = 100  # prompt templates not archived, per account
DEFAULT_MAX_TEMPLATE_VERSIONS = 1000  # versions of one template (each is kept in full)


class Quotas(msgspec.Struct, frozen=True):
    keys: int = DEFAULT_MAX_KEYS
    templates: int = DEFAULT_MAX_TEMPLATES
    template_versions: int = DEFAULT_MAX_TEMPLATE_VERSIONS


class QuotaExceeded(Exception):
    """A create past a quota; `code` names the quota (`key_quota_exceeded`, ...), the message its limit."""

    def __init__(self, code: str, message: str, limit: int):
        super().__init__(message)
        self.code, self.limit = code, limit


def check_versions(count: int, limit: int) -> None:
    """A template holding `count` versions may take one more."""
    if count >= limit:
        raise QuotaExceeded(
            "template_version_quota_exceeded",
            f"this template has {count} versions, the most one template may have ({limit}); "
            "create a new template (or archive old ones) to go on",
            limit,
        )


class Holdings(Aggregate):
    """The keys (not revoked) and templates (not archived) of one account, counted against its quotas."""

    class Opened(Aggregate.Created):
        account_id: UUID

    class KeyAdded(Aggregate.Event):
        key_id: UUID

    class KeyRemoved(Aggregate.Event):
        key_id: UUID

    class TemplateAdded(Aggregate.Event):
        template_id: UUID

    class TemplateRemoved(Aggregate.Event):
        template_id: UUID

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"mesh:holdings:{account_id}")

    @event(Opened)
    def __init__(self, account_id: UUID):
        self.account_id = account_id
        self.keys: set[UUID] = set()
        self.templates: set[UUID] = set()

    def add_key(self, key_id: UUID, limit: int) -> None:
        if len(self.keys) >= limit:
            raise QuotaExceeded(
                "key_quota_exceeded",
                f"this account has {len(self.keys)} API keys, the most it may have ({limit}); revoke one first",
                limit,
            )
        self._add_key(key_id)

    @event(KeyAdded)
    def _add_key(self, key_id: UUID) -> None:
        self.keys.add(key_id)

    def remove_key(self, key_id: UUID) -> None:
        if key_id in self.keys:
            self._remove_key(key_id)

    @event(KeyRemoved)
    def _remove_key(self, key_id: UUID) -> None:
        self.keys.discard(key_id)

    def add_template(self, template_id: UUID, limit: int) -> None:
        if len(self.templates) >= limit:
            raise QuotaExceeded(
                "template_quota_exceeded",
                f"this account has {len(self.templates)} templates, the most it may have ({limit}); archive one first",
                limit,
            )
        self._add_template(template_id)

    @event(TemplateAdded)
    def _add_template(self, template_id: UUID) -> None:
        self.templates.add(template_id)

    def remove_template(self, template_id: UUID) -> None:
        if template_id in self.templates:
            self._remove_template(template_id)

    @event(TemplateRemoved)
    def _remove_template(self, template_id: UUID) -> None:
        self.templates.discard(template_id)
