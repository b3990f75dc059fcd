"""Prompt templates: named, versioned message lists with {{variables}} and default request parameters.

Every save is a new immutable version (1, 2, ...). Labels (`production`, `staging`, ...) point at a
version and can move. Archiving hides a template and frees its name; its history stays. A name is unique
in its account: a `TemplateName` claim, whose id is derived from the account and the name, is saved in
the same atomic append as the template that takes it.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.bounds import MAX_MODEL_ID_LENGTH, check_text
from domain.rendering import CompiledMessages, InvalidTemplate

MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 2000
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 100_000
MAX_TEMPLATE_CHARS = 256_000  # all messages together
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
MAX_LABELS = 50
ROLES = ("system", "user", "assistant")
LATEST = "latest"  # `name@latest`: the newest version, like `name`
LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
MAX_LABEL_CHARS = 40
# check_label's rule as one pattern (with MAX_LABEL_CHARS as its maximum length), for the OpenAPI document
LABEL_DOCUMENT_PATTERN = r"^(?!latest$)([a-z]|[0-9]+[a-z_.-])[a-z0-9_.-]*$"
LABEL_RULE = (
    f"a label is 1 to {MAX_LABEL_CHARS} characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit, "
    f"not only digits and not 'latest'"
)
REFERENCE_SEPARATOR = "@"
# What a template may set as request defaults, and the checks each one gets.
DEFAULT_FIELDS = ("model", "temperature", "top_p", "max_tokens", "stop")
_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}
# control, format (invisible), surrogate, private use, line breaks; unassigned code points are allowed (they are
# no more invisible than any other, and leaving them out keeps NAME_PATTERN a class of about 30 ranges)
_NAME_FORBIDDEN = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def _forbidden_class() -> str:
    """The characters of _NAME_FORBIDDEN and the reference separator, as a regex class body (ranges of code
    points), so the name's rule can be stated as a pattern in the OpenAPI document."""
    category, at = unicodedata.category, ord(REFERENCE_SEPARATOR)
    # surrogates are left out of the class: no JSON text decodes to one (and regex engines without them refuse it)
    codes = [
        c
        for c in range(sys.maxunicode + 1)
        if c == at or (category(chr(c)) in _NAME_FORBIDDEN and not 0xD800 <= c <= 0xDFFF)
    ]
    # a range starts where a code does not follow the one before it
    starts = [c for i, c in enumerate(codes) if i == 0 or codes[i - 1] != c - 1]
    ends = [c for i, c in enumerate(codes) if i == len(codes) - 1 or codes[i + 1] != c + 1]
    ranges = list(zip(starts, ends))
    return "".join(_escape(a) + ("-" + _escape(b) if b > a else "") for a, b in ranges)


def _escape(code: int) -> str:
    """BMP code points as \\uXXXX (Python's and ECMAScript's regexes alike), others as the character itself (no escape
    for them is common to both)."""
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


# A name as the document states it: leading white space (stripped), then a character that is neither forbidden nor
# white space, then no forbidden character; check_name is the same rule.
NAME_PATTERN = "^\\s*[^{0}\\s][^{0}]*$".format(_forbidden_class())
NAME_RULE = (
    f"a template name is 1 to {MAX_NAME_LENGTH} characters, not only white space, without control or invisible "
    f"characters and without '{REFERENCE_SEPARATOR}'"
)


class TemplateNotFound(LookupError):
    pass


class TemplateNameTaken(ValueError):
    pass


class TemplateArchived(ValueError):
    """An archived template cannot be changed."""


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidTemplate(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    if REFERENCE_SEPARATOR in name:
        raise InvalidTemplate(
            f"name must not contain '{REFERENCE_SEPARATOR}': it separates name and version "
            f"in 'name@3' or 'name@production'"
        )
    for ch in name:
        if unicodedata.category(ch) in _NAME_FORBIDDEN:
            raise InvalidTemplate(f"name must not contain control or invisible characters (found U+{ord(ch):04X})")
    return name


def check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidTemplate(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters")
    if description is not None:
        check_text(description, "description", MAX_DESCRIPTION_LENGTH, multiline=True, error=InvalidTemplate)
    return description or None


def check_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages as stored (role and content only); raises InvalidTemplate, also for bad placeholders."""
    if not messages or len(messages) > MAX_MESSAGES:
        raise InvalidTemplate(f"messages must hold 1 to {MAX_MESSAGES} messages")
    cleaned, total = [], 0
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidTemplate(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
        if not isinstance(content, str) or len(content) > MAX_MESSAGE_CHARS:
            raise InvalidTemplate(f"messages[{i}].content must be text of at most {MAX_MESSAGE_CHARS} characters")
        check_text(content, f"messages[{i}].content", MAX_MESSAGE_CHARS, multiline=True, error=InvalidTemplate)
        total += len(content)
        cleaned.append({"role": role, "content": content})
    if total > MAX_TEMPLATE_CHARS:
        raise InvalidTemplate(f"messages must hold at most {MAX_TEMPLATE_CHARS} characters together, got {total}")
    try:
        CompiledMessages(cleaned)
    except InvalidTemplate as exc:
        raise InvalidTemplate(f"messages: {exc}") from None
    return cleaned


def check_defaults(defaults: dict[str, Any] | None) -> dict[str, Any]:
    """Default request parameters; null values are left out."""
    cleaned: dict[str, Any] = {}
    for field, value in (defaults or {}).items():
        if field not in DEFAULT_FIELDS:
            raise InvalidTemplate(
                f"defaults.{str(field)[:40]} is not supported; defaults may set {', '.join(DEFAULT_FIELDS)}"
            )
        if value is None:
            continue
        if field == "model" and not (isinstance(value, str) and value.strip()):
            raise InvalidTemplate("defaults.model must be a model id")
        elif field == "model":
            check_text(value, "defaults.model", MAX_MODEL_ID_LENGTH, error=InvalidTemplate)
        elif field in _RANGES:
            low, high = _RANGES[field]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise InvalidTemplate(f"defaults.{field} must be a number from {low:g} to {high:g}")
        elif field == "max_tokens" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidTemplate("defaults.max_tokens must be a whole number of at least 1")
        elif field == "stop":
            stops = [value] if isinstance(value, str) else value
            if (
                not isinstance(stops, list)
                or not 1 <= len(stops) <= MAX_STOP_SEQUENCES
                or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
            ):
                raise InvalidTemplate(
                    f"defaults.stop must be a string or 1 to {MAX_STOP_SEQUENCES} strings of "
                    f"1 to {MAX_STOP_CHARS} characters"
                )
            for stop in stops:
                check_text(stop, "defaults.stop", MAX_STOP_CHARS, multiline=True, error=InvalidTemplate)
        cleaned[field] = value.strip() if field == "model" else value
    return cleaned


def check_label(label: str) -> str:
    if not LABEL_PATTERN.fullmatch(label) or label.isdigit() or label == LATEST:
        raise InvalidTemplate(f"{LABEL_RULE}; got {label[:60]!r}")
    return label


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


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two versions' contents, as field names (`defaults.temperature`, ...)."""
    changed = [f for f in ("description", "messages") if before.get(f) != after.get(f)]
    old, new = before.get("defaults") or {}, after.get("defaults") or {}
    changed += [f"defaults.{f}" for f in DEFAULT_FIELDS if old.get(f) != new.get(f)]
    return changed


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
