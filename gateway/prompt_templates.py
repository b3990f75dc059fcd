"""Prompt templates in chat requests, from an in-memory cache kept current by template events.

A request may name a template (`"template": "name"`, `"name@3"` or `"name@production"`) and fill its
`variables`. The template's rendered messages go first, then the request's own; the request's parameters
win over the template's defaults; the template's model is used when the request names none. Both fields
are removed before the body goes upstream.

The gateway reads a template once per process from the read model (its head: name, newest version,
labels; and each version it uses, compiled once: versions never change). Template events reach every
gateway process from NATS (gateway/feed.py) and move heads at once. Events heard in the last minute are
also kept, so a load from a read model that has not caught up yet is brought forward, not believed.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Protocol
from uuid import UUID

import msgspec

from domain.events import events_of
from domain.rendering import CompiledMessages, TemplateRenderError
from domain.template import Template, TemplateNotFound, parse_reference, pick_version
from domain.template_content import MAX_NAME_LENGTH
from domain.template_head import TemplateHead
from gateway.errors import GatewayError, invalid

RECENT_SECONDS = 60.0  # how long events heard on the wire are kept to correct a lagging read model
MISSING_SECONDS = 5.0  # how long "no such template" is believed before the read model is asked again
MAX_ENTRIES = 50_000  # names held; beyond it, start afresh
MAX_VERSION_CHARS = 64_000_000  # characters of compiled versions held; beyond it, start afresh
EVENTS = events_of(Template)  # what moves a template's head


class CompiledVersion:
    """One version, compiled: rendering it only joins strings."""

    __slots__ = ("template_id", "number", "messages", "defaults", "size")

    def __init__(self, template_id: UUID, number: int, messages: list[dict[str, str]], defaults: dict[str, Any]):
        self.template_id, self.number = template_id, number
        self.messages = CompiledMessages(messages)
        self.defaults = defaults
        self.size = sum(len(m["content"]) for m in messages)


class TemplateLoader(Protocol):
    async def head(self, account_id: UUID, name: str) -> TemplateHead | None:
        """The account's template of that name that is not archived, from the read model."""

    async def version(self, template_id: UUID, version: int) -> tuple[list[dict[str, str]], dict[str, Any]] | None:
        """A version's messages and defaults, from the read model."""


class TemplateUse(msgspec.Struct, frozen=True):
    """The template a request used: it goes into the usage event."""

    template_id: UUID
    version: int


def names_template(body: dict[str, Any]) -> bool:
    """Whether a request body has a template's fields (`template`, `variables`): else it has nothing to expand."""
    return "template" in body or "variables" in body


class TemplateCache:
    def __init__(self, load: TemplateLoader, ttl: float = 300.0):
        self.load = load
        self.ttl = ttl  # a safety net only: events keep heads current
        self._heads: dict[tuple[UUID, str], tuple[float, TemplateHead]] = {}  # (account, name) -> until, head
        self._where: dict[UUID, tuple[UUID, str]] = {}  # template id -> its key in _heads
        self._missing: dict[str, dict[UUID, float]] = {}  # name -> account -> until: no such template
        self._versions: dict[tuple[UUID, int], CompiledVersion] = {}
        self._version_chars = 0
        self._recent: deque[tuple[float, Any]] = deque()  # (heard at, event)

    async def resolve(self, account_id: UUID, reference: str) -> CompiledVersion:
        """The version a reference names in the account; GatewayError 404 if there is none."""
        name, selector = parse_reference(reference)
        head = await self._head(account_id, name) if len(name) <= MAX_NAME_LENGTH else None
        if head is None:
            raise GatewayError(
                404,
                f"no template named {name[:100]!r} in this account; GET /api/templates lists them",
                "invalid_request_error",
                "template_not_found",
                "template",
            )
        try:
            number = pick_version(head.latest, head.labels, selector)
        except TemplateNotFound as exc:
            raise GatewayError(
                404, f"template {name!r}: {exc}", "invalid_request_error", "template_version_not_found", "template"
            ) from None
        return await self._version(head.template_id, number)

    async def expand(self, account_id: UUID, body: dict[str, Any]) -> TemplateUse | None:
        """Apply the template the request body names to it, in place (the gateway's own fields `template` and
        `variables` are taken out); the template used, or None if it names none."""
        if not names_template(body):
            return None
        reference, variables = body.pop("template", None), body.pop("variables", None)
        if reference is None:
            if variables is not None:
                raise invalid("'variables' fill a template: send 'template' too", "invalid_request", "variables")
            return None
        if not isinstance(reference, str) or not reference.strip():
            raise invalid(
                "'template' must be a template name, optionally with a version or label: 'name', "
                "'name@3' or 'name@production'",
                "invalid_request",
                "template",
            )
        if variables is not None and not isinstance(variables, dict):
            raise invalid(
                "'variables' must be an object of names to strings or numbers", "invalid_request", "variables"
            )
        version = await self.resolve(account_id, reference)
        try:
            messages = version.messages.render(variables)
        except TemplateRenderError as exc:
            raise invalid(str(exc), exc.code, exc.param) from None
        merge(body, messages, version.defaults)
        return TemplateUse(version.template_id, version.number)

    # The cache

    async def _head(self, account_id: UUID, name: str) -> TemplateHead | None:
        now = time.monotonic()
        hit = self._heads.get((account_id, name))
        if hit is not None and hit[0] > now:
            return hit[1] if not hit[1].archived else None
        if self._missing.get(name, {}).get(account_id, 0.0) > now:
            return None
        head = self._brought_forward(account_id, name, await self.load.head(account_id, name))
        if len(self._heads) + len(self._missing) > MAX_ENTRIES:
            self.clear()
        if head is None:
            self._missing.setdefault(name, {})[account_id] = now + MISSING_SECONDS
            return None
        self._hold(head, now + self.ttl)
        return head if not head.archived else None

    def _hold(self, head: TemplateHead, deadline: float) -> None:
        self._heads[(head.account_id, head.name)] = (deadline, head)
        self._where[head.template_id] = (head.account_id, head.name)
        self._missing.get(head.name, {}).pop(head.account_id, None)

    async def _version(self, template_id: UUID, number: int) -> CompiledVersion:
        found = self._versions.get((template_id, number))
        if found is not None:
            return found
        content = self._heard_version(template_id, number) or await self.load.version(template_id, number)
        if content is None:
            raise GatewayError(
                503,
                f"version {number} of this template is not readable yet; try again",
                "api_error",
                "template_unavailable",
                "template",
            )
        return self._keep(CompiledVersion(template_id, number, *content))

    def _keep(self, version: CompiledVersion) -> CompiledVersion:
        if self._version_chars > MAX_VERSION_CHARS:
            self._versions.clear()
            self._version_chars = 0
        self._versions[(version.template_id, version.number)] = version
        self._version_chars += version.size
        return version

    def apply(self, event: Any) -> None:
        """A template event heard on the wire: move the cached head it concerns, and remember it a while."""
        now = time.monotonic()
        self._recent.append((now, event))
        while self._recent and self._recent[0][0] < now - RECENT_SECONDS:
            self._recent.popleft()
        if isinstance(event, Template.Created):  # the name is taken now: "no such template" or an archived one is stale
            self._missing.get(event.name, {}).pop(event.account_id, None)
            self._heads.pop((event.account_id, event.name), None)
            return
        if isinstance(event, Template.Renamed):
            self._missing.pop(event.name, None)  # whichever account it was in
        where = self._where.get(event.originator_id)
        hit = self._heads.get(where) if where is not None else None
        if hit is None or hit[1].template_id != event.originator_id:
            return  # not cached here: a later load reads it, brought forward by the recent events
        deadline, head = hit
        self._advance(head, event)
        if head.name != where[1]:
            del self._heads[where]
            self._hold(head, deadline)

    def clear(self) -> None:
        """Forget the heads (after a gap in the event feed): the next request reloads. Versions never change."""
        self._heads.clear()
        self._missing.clear()
        self._where.clear()

    def _advance(self, head: TemplateHead, e: Any) -> None:
        """Move the head (domain/template_head.py), keeping a version saved since compiled."""
        if isinstance(e, Template.VersionSaved) and e.originator_version > head.revision:
            if (head.template_id, e.version) not in self._versions:
                self._keep(CompiledVersion(head.template_id, e.version, e.messages, e.defaults))
        head.apply(e)

    def _brought_forward(self, account_id: UUID, name: str, head: TemplateHead | None) -> TemplateHead | None:
        """A loaded head with the events heard since that the read model may not have applied yet; or, when
        it no longer holds the name, the template created under the name meanwhile."""
        if head is not None and self._replayed(head, name) is not None:
            return head
        created = [
            e
            for _, e in self._recent
            if isinstance(e, Template.Created) and e.account_id == account_id and e.name == name
        ]
        if not created:
            return None
        e = created[-1]
        return self._replayed(TemplateHead.created(e), name)

    def _replayed(self, head: TemplateHead, name: str) -> TemplateHead | None:
        for _, e in self._recent:
            if e.originator_id == head.template_id and not isinstance(e, Template.Created):
                self._advance(head, e)
        return head if head.name == name and not head.archived else None

    def _heard_version(self, template_id: UUID, number: int) -> tuple[list, dict] | None:
        for _, e in self._recent:
            if e.originator_id == template_id and (
                (isinstance(e, Template.Created) and number == 1)
                or (isinstance(e, Template.VersionSaved) and e.version == number)
            ):
                return e.messages, e.defaults
        return None


def merge(body: dict, messages: list[dict[str, str]], defaults: dict[str, Any]) -> None:
    """Put a rendered template into a chat request body: its messages first, its defaults where the request
    sets nothing (a request's max_completion_tokens counts as setting max_tokens)."""
    own = body.get("messages")
    body["messages"] = messages + own if isinstance(own, list) else messages if own is None else own
    for field, value in defaults.items():
        if body.get(field) is not None or (field == "max_tokens" and body.get("max_completion_tokens") is not None):
            continue
        body[field] = value
