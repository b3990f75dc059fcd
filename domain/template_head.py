"""A template's head: what its name resolves to in its account (name, newest version, labels, archived).

The templates read model (projections/prompt_templates.py) and the gateway's template cache
(gateway/prompt_templates.py) both keep heads; `TemplateHead.created` and `TemplateHead.apply` are how the
template events make and move one, for both.
"""

from __future__ import annotations

from typing import Any, Callable
from uuid import UUID

import msgspec

from domain.template import Template


class TemplateHead(msgspec.Struct):
    """A template's head as of its `revision` (the template aggregate's version it reflects)."""

    template_id: UUID
    account_id: UUID
    name: str
    latest: int
    labels: dict[str, int]
    archived: bool
    revision: int

    @classmethod
    def created(cls, e: Template.Created) -> TemplateHead:
        return cls(e.originator_id, e.account_id, e.name, 1, {}, False, e.originator_version)

    def apply(self, e: Any) -> None:
        """Move the head by a template event after its creation; one the head already reflects changes nothing."""
        if e.originator_version <= self.revision:
            return
        _MOVES[type(e)](self, e)
        self.revision = e.originator_version


def _version_saved(head: TemplateHead, e: Template.VersionSaved) -> None:
    head.latest = e.version


def _renamed(head: TemplateHead, e: Template.Renamed) -> None:
    head.name = e.name


def _labeled(head: TemplateHead, e: Template.Labeled) -> None:
    head.labels[e.label] = e.version


def _unlabeled(head: TemplateHead, e: Template.Unlabeled) -> None:
    head.labels.pop(e.label, None)


def _archived(head: TemplateHead, e: Template.Archived) -> None:
    head.archived = True


# What each template event after its creation changes of its head.
_MOVES: dict[type, Callable[[TemplateHead, Any], None]] = {
    Template.VersionSaved: _version_saved,
    Template.Renamed: _renamed,
    Template.Labeled: _labeled,
    Template.Unlabeled: _unlabeled,
    Template.Archived: _archived,
}
HEAD_EVENTS: tuple[type, ...] = (Template.Created, *_MOVES)  # the events that make and move a head
