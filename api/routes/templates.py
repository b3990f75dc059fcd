"""Prompt templates of the calling account: versions, labels, archive, test renders and history."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from litestar import Controller, Request, delete, get, post, put
from litestar.di import Provide
from litestar.params import Parameter

from api.auth import current_account
from api.errors import ApiError
from api.routes.bodies import AsOf
from api.routes.keys import _check_model
from api.runtime import TEMPLATES, Runtime
from domain.events import event_name
from domain.rendering import CompiledMessages
from domain.template import Template, TemplateNotFound, pick_version
from projections import templates as read_model
from projections.readmodel import position_of


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: str
    content: str


class DefaultsIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None


class TemplateIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    messages: list[MessageIn]
    description: str | None = None
    defaults: DefaultsIn | None = None


class LabelIn(msgspec.Struct, forbid_unknown_fields=True):
    version: int


class RenderIn(msgspec.Struct, forbid_unknown_fields=True):
    variables: dict[str, Any] = {}
    version: int | str | None = None  # a number, a label, or the newest version


class TemplateOut(msgspec.Struct):
    id: UUID
    name: str
    version: int  # the version shown
    latest_version: int
    description: str | None
    messages: list[dict[str, str]]
    defaults: dict[str, Any]
    variables: list[str]
    labels: dict[str, int]  # label -> version
    archived: bool
    created_at: datetime
    updated_at: datetime
    as_of: AsOf | None = None


class TemplateListOut(msgspec.Struct):
    data: list[TemplateOut]
    as_of: AsOf


class VersionOut(msgspec.Struct):
    version: int
    description: str | None
    messages: list[dict[str, str]]
    defaults: dict[str, Any]
    variables: list[str]
    labels: list[str]  # the labels pointing at this version
    created_at: datetime


class VersionListOut(msgspec.Struct):
    data: list[VersionOut]
    as_of: AsOf


class RenderOut(msgspec.Struct):
    template_id: UUID
    name: str
    version: int
    messages: list[dict[str, str]]
    params: dict[str, Any]  # the template's defaults: what a chat request gets unless it sets its own


class TemplateEventOut(msgspec.Struct):
    type: str
    time: datetime
    revision: int  # the template's change counter (not its version number)
    by: str
    details: dict


def _variables(messages: list[dict[str, str]]) -> list[str]:
    return list(CompiledMessages(messages).variables)


def row_out(row: read_model.TemplateRow, version: read_model.VersionRow) -> TemplateOut:
    return TemplateOut(row.template_id, row.name, version.version, row.latest_version, version.description,
                       version.messages, version.defaults, _variables(version.messages), row.labels, row.archived,
                       row.created_at, row.updated_at)


def aggregate_out(template: Template) -> TemplateOut:
    latest = template.latest
    return TemplateOut(template.id, template.name, latest.number, latest.number, latest.description,
                       latest.messages, latest.defaults, _variables(latest.messages), dict(template.labels),
                       template.archived, template.created_on, template.modified_on)


async def _as_of(conn) -> AsOf:
    return AsOf(*await position_of(conn, TEMPLATES))


def _not_found(template_id: UUID) -> ApiError:
    return ApiError(404, f"no template {template_id} in this account", "not_found")


class TemplateController(Controller):
    path = "/api/templates"
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201)
    async def create(self, request: Request, account_id: UUID, data: TemplateIn) -> TemplateOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.templates.create, account_id, *self._content(runtime, data))
        return await self._answer(runtime, result)

    @get("/")
    async def list_templates(self, request: Request, account_id: UUID, archived: bool = False) -> TemplateListOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            rows = await read_model.templates_of(conn, account_id, archived)
            latest = await read_model.latest_versions(conn, rows)
            as_of = await _as_of(conn)
        return TemplateListOut([row_out(r, latest[r.template_id]) for r in rows if r.template_id in latest], as_of)

    @get("/{template_id:uuid}")
    async def get_template(self, request: Request, account_id: UUID, template_id: UUID,
                           version: str | None = Parameter(query="version", default=None)) -> TemplateOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            row, shown = await self._version(conn, account_id, template_id, version)
            out = row_out(row, shown)
            out.as_of = await _as_of(conn)
        return out

    @get("/{template_id:uuid}/versions")
    async def versions(self, request: Request, account_id: UUID, template_id: UUID) -> VersionListOut:
        runtime: Runtime = request.app.state.runtime
        async with runtime.pool.connection() as conn:
            row = await read_model.template_of(conn, account_id, template_id)
            if row is None:
                raise _not_found(template_id)
            versions = await read_model.versions_of(conn, template_id)
            as_of = await _as_of(conn)
        return VersionListOut([VersionOut(v.version, v.description, v.messages, v.defaults, _variables(v.messages),
                                          sorted(label for label, n in row.labels.items() if n == v.version),
                                          v.created_at) for v in versions], as_of)

    @put("/{template_id:uuid}")
    async def save(self, request: Request, account_id: UUID, template_id: UUID, data: TemplateIn) -> TemplateOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.templates.save, account_id, template_id,
                                         *self._content(runtime, data))
        return await self._answer(runtime, result)

    @put("/{template_id:uuid}/labels/{label:str}")
    async def label(self, request: Request, account_id: UUID, template_id: UUID, label: str,
                    data: LabelIn) -> TemplateOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.templates.label, account_id, template_id, label, data.version)
        return await self._answer(runtime, result)

    @delete("/{template_id:uuid}/labels/{label:str}", status_code=200)
    async def unlabel(self, request: Request, account_id: UUID, template_id: UUID, label: str) -> TemplateOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.templates.unlabel, account_id, template_id, label)
        return await self._answer(runtime, result)

    @delete("/{template_id:uuid}", status_code=200)
    async def archive(self, request: Request, account_id: UUID, template_id: UUID) -> TemplateOut:
        runtime: Runtime = request.app.state.runtime
        result = await asyncio.to_thread(runtime.templates.archive, account_id, template_id)
        return await self._answer(runtime, result)

    @post("/{template_id:uuid}/render", status_code=200)
    async def render(self, request: Request, account_id: UUID, template_id: UUID,
                     data: RenderIn | None = None) -> RenderOut:
        """The messages and parameters a chat request with this template would send; no model is called."""
        runtime: Runtime = request.app.state.runtime
        data = data or RenderIn()
        selector = str(data.version) if data.version is not None else None
        async with runtime.pool.connection() as conn:
            row, shown = await self._version(conn, account_id, template_id, selector)
        messages = CompiledMessages(shown.messages).render(data.variables)
        return RenderOut(row.template_id, row.name, shown.version, messages, shown.defaults)

    @get("/{template_id:uuid}/events")
    async def history(self, request: Request, account_id: UUID, template_id: UUID) -> list[TemplateEventOut]:
        """Who changed what, when: every event of the template, oldest first."""
        runtime: Runtime = request.app.state.runtime
        events = await asyncio.to_thread(runtime.templates.history, account_id, template_id)
        history = []
        for e in events:
            details = {k: v for k, v in vars(e).items() if k not in _ENVELOPE_FIELDS}
            history.append(TemplateEventOut(event_name(type(e)), e.timestamp, e.originator_version,
                                            details.pop("by", "account"), msgspec.to_builtins(details)))
        return history

    @staticmethod
    def _content(runtime: Runtime, data: TemplateIn) -> tuple:
        defaults = msgspec.structs.asdict(data.defaults) if data.defaults is not None else {}
        _check_model(runtime, defaults.get("model"), "defaults.model")
        return data.name, data.description, [msgspec.structs.asdict(m) for m in data.messages], defaults

    @staticmethod
    async def _version(conn, account_id: UUID, template_id: UUID,
                       selector: str | None) -> tuple[read_model.TemplateRow, read_model.VersionRow]:
        row = await read_model.template_of(conn, account_id, template_id)
        if row is None:
            raise _not_found(template_id)
        number = pick_version(row.latest_version, row.labels, selector)
        version = await read_model.version_of(conn, template_id, number)
        if version is None:
            raise TemplateNotFound(f"version {number} of template {template_id} is not readable yet; try again")
        return row, version

    @staticmethod
    async def _answer(runtime: Runtime, result) -> TemplateOut:
        await runtime.caught_up(TEMPLATES, result.position)
        return aggregate_out(result.template)


_ENVELOPE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "account_id"}
