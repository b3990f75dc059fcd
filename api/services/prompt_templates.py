"""Prompt templates: create, save a version, list, read a version, render with variables."""

from __future__ import annotations

import asyncio
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.read_models import TEMPLATES
from api.services.as_of import AsOf, read_as_of
from api.services.errors import Missing
from api.services.models import check_model
from api.services.read_your_writes import ReadModelWaiter
from commands.prompt_templates import TemplateCommands
from domain.rendering import CompiledMessages
from domain.template import Template, TemplateNotFound, pick_version
from gateway.catalog import Catalog
from projections import prompt_templates as read_model


class TemplateContent(msgspec.Struct):
    """What one version holds, as the caller gave it."""

    name: str
    messages: list[dict[str, str]]
    description: str | None = None
    defaults: dict = {}


class TemplateView(msgspec.Struct):
    row: read_model.TemplateRow
    version: read_model.VersionRow
    as_of: AsOf | None = None


class Rendered(msgspec.Struct):
    row: read_model.TemplateRow
    version: int
    messages: list[dict[str, str]]
    params: dict  # the version's defaults


def variables(messages: list[dict[str, str]]) -> list[str]:
    """The {{variables}} the messages need, in order of first use."""
    return list(CompiledMessages(messages).variables)


def not_found(template_id: UUID) -> Missing:
    return Missing(f"no template {template_id} in this account", "not_found")


class TemplateService:
    def __init__(
        self, templates: TemplateCommands, pool: AsyncConnectionPool, waiter: ReadModelWaiter, catalog: Catalog
    ):
        self.templates = templates
        self.pool = pool
        self.waiter = waiter
        self.catalog = catalog  # the models a template's defaults may name

    async def create(self, account_id: UUID, content: TemplateContent) -> Template:
        return await self._command(self.templates.create, account_id, *self._content(content))

    async def save(self, account_id: UUID, template_id: UUID, content: TemplateContent) -> Template:
        """A new version (or a rename)."""
        return await self._command(self.templates.save, account_id, template_id, *self._content(content))

    async def command(self, name: str, account_id: UUID, template_id: UUID, *args) -> Template:
        """label, unlabel or archive."""
        return await self._command(getattr(self.templates, name), account_id, template_id, *args)

    async def listing(self, account_id: UUID, archived: bool = False) -> tuple[list[TemplateView], AsOf]:
        async with self.pool.connection() as conn:
            rows = await read_model.templates_of(conn, account_id, archived)
            latest = await read_model.latest_versions(conn, rows)
            as_of = await read_as_of(conn, TEMPLATES)
        return [TemplateView(r, latest[r.template_id]) for r in rows if r.template_id in latest], as_of

    async def one(self, account_id: UUID, template_id: UUID, selector: str | None = None) -> TemplateView:
        """One version (a number, a label, or the newest) of the template."""
        async with self.pool.connection() as conn:
            row, shown = await _version(conn, account_id, template_id, selector)
            return TemplateView(row, shown, await read_as_of(conn, TEMPLATES))

    async def versions(
        self, account_id: UUID, template_id: UUID
    ) -> tuple[read_model.TemplateRow, list[read_model.VersionRow], AsOf]:
        async with self.pool.connection() as conn:
            row = await read_model.template_of(conn, account_id, template_id)
            if row is None:
                raise not_found(template_id)
            versions = await read_model.versions_of(conn, template_id)
            as_of = await read_as_of(conn, TEMPLATES)
        return row, versions, as_of

    async def render(
        self, account_id: UUID, template_id: UUID, variables: dict, selector: str | None = None
    ) -> Rendered:
        """The messages and parameters a chat request with this template would send; no model is called."""
        async with self.pool.connection() as conn:
            row, shown = await _version(conn, account_id, template_id, selector)
        messages = CompiledMessages(shown.messages).render(variables)
        return Rendered(row, shown.version, messages, shown.defaults)

    async def history(self, account_id: UUID, template_id: UUID) -> list:
        return await asyncio.to_thread(self.templates.history, account_id, template_id)

    def _content(self, content: TemplateContent) -> tuple:
        check_model(self.catalog, content.defaults.get("model"), "defaults.model")
        return content.name, content.description, content.messages, content.defaults

    async def _command(self, method, *args) -> Template:
        return (await self.waiter.then_caught_up(TEMPLATES, method, *args)).template


async def _version(
    conn, account_id: UUID, template_id: UUID, selector: str | None
) -> tuple[read_model.TemplateRow, read_model.VersionRow]:
    row = await read_model.template_of(conn, account_id, template_id)
    if row is None:
        raise not_found(template_id)
    number = pick_version(row.latest_version, row.labels, selector)
    version = await read_model.version_of(conn, template_id, number)
    if version is None:
        raise TemplateNotFound(f"version {number} of template {template_id} is not readable yet; try again")
    return row, version
