"""Prompt templates: named, versioned message lists with {{variables}} and default request parameters.

Every save is a new immutable version (1, 2, ...). Labels (`production`, `staging`, ...) point at a
version and can move. Archiving hides a template and frees its name; its history stays. A name is unique
in its account: a `TemplateName` claim, whose id is derived from the account and the name, is saved in
the same atomic append as the template that takes it.
"""

from __future__ import annotations

from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.rendering import InvalidTemplate
from domain.template_content import (
    LATEST,
    REFERENCE_SEPARATOR,
    MAX_LABELS,
    changed_fields,
    check_defaults,
    check_description,
    check_label,
    check_messages,
    check_name,
)


class TemplateNotFound(LookupError):
    pass


class TemplateNameTaken(ValueError):
    pass


class TemplateArchived(ValueError):
    """An archived template cannot be changed."""


def parse_reference(reference: str) -> tuple[str, str | None]:
    """`name`, `name@3` or `name@label` -> (name, selector); the selector is None for the newest version."""
    name, _, selector = reference.partition(REFERENCE_SEPARATOR)
    return name.strip(), (selector.strip() or None) if _ else None


def pick_version(latest: int, labels: dict[str, int], selector: str | int | None) -> int:
    """The version a selector names: None or 'latest' the newest, a number itself, otherwise a label."""
    if selector is None or selector == LATEST:
        return latest
    if isinstance(selector, int) or selector.isdigit():
        version = int(selector)
        if not 1 <= version <= latest:
            raise TemplateNotFound(f"version {version} does not exist; versions are 1 to {latest}")
        return version
    if selector not in labels:
        known = ", ".join(sorted(labels)) or "none yet"
        raise TemplateNotFound(f"no label {selector[:60]!r} on this template; its labels: {known}")
    return labels[selector]


class TemplateVersion:
    __slots__ = ("number", "description", "messages", "defaults")

    def __init__(self, number: int, description: str | None, messages: list[dict[str, str]], defaults: dict[str, Any]):
        self.number, self.description, self.messages, self.defaults = number, description, messages, defaults

    def content(self) -> dict[str, Any]:
        return {"description": self.description, "messages": self.messages, "defaults": self.defaults}


class Template(Aggregate):
    class Created(Aggregate.Created):
        account_id: UUID
        name: str
        description: str | None
        messages: list[dict[str, str]]
        defaults: dict[str, Any]
        by: str

    class VersionSaved(Aggregate.Event):
        version: int
        description: str | None
        messages: list[dict[str, str]]
        defaults: dict[str, Any]
        changed: list[str]  # what differs from the version before
        by: str

    class Renamed(Aggregate.Event):
        name: str
        previous_name: str
        by: str

    class Labeled(Aggregate.Event):
        label: str
        version: int
        previous_version: int | None  # where the label pointed before (None: a new label)
        by: str

    class Unlabeled(Aggregate.Event):
        label: str
        version: int
        by: str

    class Archived(Aggregate.Event):
        by: str

    @classmethod
    def create(
        cls,
        account_id: UUID,
        name: str,
        description: str | None,
        messages: list[dict[str, str]],
        defaults: dict[str, Any] | None,
        by: str,
    ) -> "Template":
        return cls(
            account_id=account_id,
            name=check_name(name),
            description=check_description(description),
            messages=check_messages(messages),
            defaults=check_defaults(defaults),
            by=by,
        )

    @event(Created)
    def __init__(
        self,
        account_id: UUID,
        name: str,
        description: str | None,
        messages: list[dict[str, str]],
        defaults: dict[str, Any],
        by: str,
    ):
        self.account_id = account_id
        self.name = name
        self.versions = [TemplateVersion(1, description, messages, defaults)]
        self.labels: dict[str, int] = {}
        self.archived = False

    @property
    def latest(self) -> TemplateVersion:
        return self.versions[-1]

    def pick(self, selector: str | int | None) -> TemplateVersion:
        return self.versions[pick_version(len(self.versions), self.labels, selector) - 1]

    def _check_not_archived(self) -> None:
        if self.archived:
            raise TemplateArchived(f"template {self.id} is archived; archived templates cannot be changed")

    def save(
        self, description: str | None, messages: list[dict[str, str]], defaults: dict[str, Any] | None, by: str
    ) -> None:
        """A new version, even when nothing differs: every save is a version of its own."""
        self._check_not_archived()
        description, messages = check_description(description), check_messages(messages)
        checked_defaults = check_defaults(defaults)
        content = {"description": description, "messages": messages, "defaults": checked_defaults}
        self._save(
            len(self.versions) + 1,
            description,
            messages,
            checked_defaults,
            changed=changed_fields(self.latest.content(), content),
            by=by,
        )

    @event(VersionSaved)
    def _save(
        self,
        version: int,
        description: str | None,
        messages: list[dict[str, str]],
        defaults: dict[str, Any],
        changed: list[str],
        by: str,
    ) -> None:
        self.versions.append(TemplateVersion(version, description, messages, defaults))

    def rename(self, name: str, by: str) -> None:
        self._check_not_archived()
        name = check_name(name)
        if name != self.name:
            self._rename(name, self.name, by)

    @event(Renamed)
    def _rename(self, name: str, previous_name: str, by: str) -> None:
        self.name = name

    def label(self, label: str, version: int, by: str) -> None:
        self._check_not_archived()
        label = check_label(label)
        if not 1 <= version <= len(self.versions):
            raise TemplateNotFound(f"version {version} does not exist; versions are 1 to {len(self.versions)}")
        if label not in self.labels and len(self.labels) >= MAX_LABELS:
            raise InvalidTemplate(f"a template has at most {MAX_LABELS} labels")
        if self.labels.get(label) != version:
            self._label(label, version, self.labels.get(label), by)

    @event(Labeled)
    def _label(self, label: str, version: int, previous_version: int | None, by: str) -> None:
        self.labels[label] = version

    def unlabel(self, label: str, by: str) -> None:
        self._check_not_archived()
        if label not in self.labels:
            raise TemplateNotFound(f"no label {label[:60]!r} on this template")
        self._unlabel(label, self.labels[label], by)

    @event(Unlabeled)
    def _unlabel(self, label: str, version: int, by: str) -> None:
        del self.labels[label]

    def archive(self, by: str) -> None:
        if not self.archived:
            self._archive(by)

    @event(Archived)
    def _archive(self, by: str) -> None:
        self.archived = True


class TemplateName(Aggregate):
    """Makes a template name unique in its account: the id is derived from both, and one template holds it."""

    class Claimed(Aggregate.Created):
        account_id: UUID
        name: str
        template_id: UUID

    class Reclaimed(Aggregate.Event):
        template_id: UUID

    class Released(Aggregate.Event):
        template_id: UUID

    @staticmethod
    def create_id(account_id: UUID, name: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"mesh:template-name:{account_id}:{name}")

    @event(Claimed)
    def __init__(self, account_id: UUID, name: str, template_id: UUID):
        self.account_id = account_id
        self.name = name
        self.template_id: UUID | None = template_id

    def claim(self, template_id: UUID) -> None:
        if self.template_id is not None and self.template_id != template_id:
            raise TemplateNameTaken(f"a template named {self.name!r} already exists in this account")
        if self.template_id is None:
            self._reclaim(template_id)

    @event(Reclaimed)
    def _reclaim(self, template_id: UUID) -> None:
        self.template_id = template_id

    def release(self, template_id: UUID) -> None:
        if self.template_id == template_id:
            self._release(template_id)

    @event(Released)
    def _release(self, template_id: UUID) -> None:
        self.template_id = None
