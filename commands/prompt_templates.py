"""Prompt template use cases: each loads the template (and its name claims), lets them decide, and saves
them in one atomic append, so a name is never held by two templates of an account."""

from __future__ import annotations

from typing import Any, Callable
from uuid import UUID

import msgspec
from eventsourcing.application import AggregateNotFoundError

from commands.app import MeshApplication, NotFound, holdings_of
from domain.quota import Quotas, check_versions
from domain.template import Template, TemplateName
from domain.template_content import check_name

Messages = list[dict[str, str]]


class TemplateResult(msgspec.Struct, frozen=True):
    template: Template
    position: int  # stream position of the last event written (0: nothing changed)


class TemplateCommands:
    def __init__(self, app: MeshApplication, quotas: Quotas = Quotas()):
        self.app = app
        self.quotas = quotas

    def create(
        self,
        account_id: UUID,
        name: str,
        description: str | None,
        messages: Messages,
        defaults: dict[str, Any] | None,
        by: str = "account",
    ) -> TemplateResult:
        def use_case() -> TemplateResult:
            template = Template.create(account_id, name, description, messages, defaults, by)
            claim = self._claim(account_id, template.name, template.id)
            holdings = holdings_of(self.app, account_id)
            holdings.add_template(template.id, self.quotas.templates)
            return TemplateResult(template, self.app.save_all(holdings, template, claim))

        # a claim created at the same time: the retry sees it taken; holdings changed: counted again
        return self.app.retrying(use_case)

    def save(
        self,
        account_id: UUID,
        template_id: UUID,
        name: str,
        description: str | None,
        messages: Messages,
        defaults: dict[str, Any] | None,
        by: str = "account",
    ) -> TemplateResult:
        """A new version; a different name also moves the template's name claim."""

        def decide(template: Template) -> list[Any]:
            claims: list[Any] = []
            new_name = check_name(name)
            check_versions(len(template.versions), self.quotas.template_versions)
            template.save(description, messages, defaults, by)
            if new_name != template.name:
                claims = [self._claim(account_id, new_name, template.id), self._released(template)]
                template.rename(new_name, by)
            return claims

        return self._change(account_id, template_id, decide)

    def label(
        self, account_id: UUID, template_id: UUID, label: str, version: int, by: str = "account"
    ) -> TemplateResult:
        return self._change(account_id, template_id, lambda t: t.label(label, version, by))

    def unlabel(self, account_id: UUID, template_id: UUID, label: str, by: str = "account") -> TemplateResult:
        return self._change(account_id, template_id, lambda t: t.unlabel(label, by))

    def archive(self, account_id: UUID, template_id: UUID, by: str = "account") -> TemplateResult:
        """Hide the template and free its name; its versions and history stay."""

        def decide(template: Template) -> list[Any]:
            if template.archived:
                return []
            template.archive(by)
            holdings = holdings_of(self.app, account_id)
            holdings.remove_template(template.id)
            return [self._released(template), *([holdings] if holdings.pending_events else [])]

        return self._change(account_id, template_id, decide)

    def history(self, account_id: UUID, template_id: UUID) -> list[Any]:
        self.get(account_id, template_id)
        return list(self.app.events.get(template_id))

    def get(self, account_id: UUID, template_id: UUID) -> Template:
        try:
            template = self.app.repository.get(template_id)
        except AggregateNotFoundError:
            template = None
        if not isinstance(template, Template) or template.account_id != account_id:
            raise NotFound(f"no template {template_id} in this account")
        return template

    def _change(
        self, account_id: UUID, template_id: UUID, decide: Callable[[Template], list[Any] | None]
    ) -> TemplateResult:
        def use_case() -> TemplateResult:
            template = self.get(account_id, template_id)
            others = decide(template) or []
            position = self.app.save_all(template, *others) if template.pending_events else 0
            return TemplateResult(template, position)

        return self.app.retrying(use_case)

    def _claim(self, account_id: UUID, name: str, template_id: UUID) -> TemplateName:
        """The name's claim, taken for `template_id` (new, or released by a template archived or renamed)."""
        try:
            claim = self.app.repository.get(TemplateName.create_id(account_id, name))
        except AggregateNotFoundError:
            return TemplateName(account_id=account_id, name=name, template_id=template_id)
        claim.claim(template_id)
        return claim

    def _released(self, template: Template) -> TemplateName:
        claim: TemplateName = self.app.repository.get(TemplateName.create_id(template.account_id, template.name))
        claim.release(template.id)
        return claim
