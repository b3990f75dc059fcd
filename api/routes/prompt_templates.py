"""Prompt templates of the calling account: versions, labels, archive, test renders and history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery, JSONBody, PathParameter

from api.openapi import ACCOUNT, errors
from api.auth import current_account
from api.services.as_of import AsOf
from api.services.prompt_templates import TemplateContent, TemplateService, variables
from domain.events import event_name
from domain.bounds import MAX_MODEL_ID_LENGTH, text
from domain.template import Template
from domain.template_content import (
    MAX_DESCRIPTION_LENGTH,
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    MAX_NAME_LENGTH,
    MAX_STOP_CHARS,
    LABEL_DOCUMENT_PATTERN,
    MAX_LABEL_CHARS,
    MAX_STOP_SEQUENCES,
    NAME_PATTERN,
    ROLES,
)
from projections import prompt_templates as read_model


# The domain's rules (domain/template.py), stated in the document; the domain checks the rest (placeholders,
# invisible characters in a name, the messages' total size) with the same constants.
Role = Literal[ROLES]  # type: ignore[valid-type]
StopText = Annotated[str, text(MAX_STOP_CHARS, min_length=1, multiline=True)]


# The label in a path, as domain.template.check_label checks it (a 400 invalid_template naming the rule)
LabelPath = Annotated[
    str,
    PathParameter(
        schema_extra={"pattern": LABEL_DOCUMENT_PATTERN, "minLength": 1, "maxLength": MAX_LABEL_CHARS},
        description="a label: a-z, 0-9, _ . -, starting with a letter or digit, not only digits, not 'latest'",
    ),
]


class MessageIn(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    content: Annotated[str, text(MAX_MESSAGE_CHARS, multiline=True)]


class DefaultsIn(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    model: Annotated[str, text(MAX_MODEL_ID_LENGTH, min_length=1)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: StopText | Annotated[list[StopText], msgspec.Meta(min_length=1, max_length=MAX_STOP_SEQUENCES)] | None = None


class TemplateIn(msgspec.Struct, forbid_unknown_fields=True):
    invalid_code: ClassVar[str] = "invalid_template"  # a refused body's code (api/input_errors.py)
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME_LENGTH, pattern=NAME_PATTERN)]
    messages: Annotated[list[MessageIn], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    description: Annotated[str, text(MAX_DESCRIPTION_LENGTH, multiline=True)] | None = None
    defaults: DefaultsIn | None = None


class LabelIn(msgspec.Struct, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]


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


def row_out(row: read_model.TemplateRow, version: read_model.VersionRow) -> TemplateOut:
    return TemplateOut(
        row.template_id,
        row.name,
        version.version,
        row.latest_version,
        version.description,
        version.messages,
        version.defaults,
        variables(version.messages),
        row.labels,
        row.archived,
        row.created_at,
        row.updated_at,
    )


def aggregate_out(template: Template) -> TemplateOut:
    latest = template.latest
    return TemplateOut(
        template.id,
        template.name,
        latest.number,
        latest.number,
        latest.description,
        latest.messages,
        latest.defaults,
        variables(latest.messages),
        dict(template.labels),
        template.archived,
        template.created_on,
        template.modified_on,
    )


def content(data: TemplateIn) -> TemplateContent:
    defaults = msgspec.structs.asdict(data.defaults) if data.defaults is not None else {}
    return TemplateContent(data.name, [msgspec.structs.asdict(m) for m in data.messages], data.description, defaults)


class TemplateController(Controller):
    path = "/api/templates"
    security = ACCOUNT
    dependencies = {"account_id": Provide(current_account)}

    @post("/", status_code=201, responses=errors(400, 404, 409))
    async def create(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        data: JSONBody[TemplateIn],
    ) -> TemplateOut:
        return aggregate_out(await template_service.create(account_id, content(data)))

    @get("/", responses=errors(400))
    async def list_templates(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        archived: FromQuery[bool] = False,
    ) -> TemplateListOut:
        views, as_of = await template_service.listing(account_id, archived)
        return TemplateListOut([row_out(v.row, v.version) for v in views], as_of)

    @get("/{template_id:uuid}", responses=errors(400, 404))
    async def get_template(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        version: FromQuery[str | None] = None,
    ) -> TemplateOut:
        view = await template_service.one(account_id, template_id, version)
        out = row_out(view.row, view.version)
        out.as_of = view.as_of
        return out

    @get("/{template_id:uuid}/versions", responses=errors(404))
    async def versions(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
    ) -> VersionListOut:
        row, versions, as_of = await template_service.versions(account_id, template_id)
        return VersionListOut(
            [
                VersionOut(
                    v.version,
                    v.description,
                    v.messages,
                    v.defaults,
                    variables(v.messages),
                    sorted(label for label, n in row.labels.items() if n == v.version),
                    v.created_at,
                )
                for v in versions
            ],
            as_of,
        )

    @put("/{template_id:uuid}", responses=errors(400, 404, 409))
    async def save(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        data: JSONBody[TemplateIn],
    ) -> TemplateOut:
        return aggregate_out(await template_service.save(account_id, template_id, content(data)))

    @put("/{template_id:uuid}/labels/{label:str}", responses=errors(400, 404, 409))
    async def label(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        data: JSONBody[LabelIn],
        label: LabelPath,
    ) -> TemplateOut:
        return aggregate_out(await template_service.command("label", account_id, template_id, label, data.version))

    @delete("/{template_id:uuid}/labels/{label:str}", status_code=200, responses=errors(400, 404, 409))
    async def unlabel(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        label: LabelPath,
    ) -> TemplateOut:
        return aggregate_out(await template_service.command("unlabel", account_id, template_id, label))

    @delete("/{template_id:uuid}", status_code=200, responses=errors(404, 409))
    async def archive(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
    ) -> TemplateOut:
        return aggregate_out(await template_service.command("archive", account_id, template_id))

    @post("/{template_id:uuid}/render", status_code=200, responses=errors(400, 404))
    async def render(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        data: JSONBody[RenderIn | None] = None,
    ) -> RenderOut:
        """The messages and parameters a chat request with this template would send; no model is called."""
        data = data or RenderIn()
        selector = str(data.version) if data.version is not None else None
        rendered = await template_service.render(account_id, template_id, data.variables, selector)
        return RenderOut(
            rendered.row.template_id, rendered.row.name, rendered.version, rendered.messages, rendered.params
        )

    @get("/{template_id:uuid}/events", responses=errors(404))
    async def history(
        self,
        template_service: NamedDependency[TemplateService],
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
    ) -> list[TemplateEventOut]:
        """Who changed what, when: every event of the template, oldest first."""
        history = []
        for e in await template_service.history(account_id, template_id):
            details = {k: v for k, v in vars(e).items() if k not in _ENVELOPE_FIELDS}
            history.append(
                TemplateEventOut(
                    event_name(type(e)),
                    e.timestamp,
                    e.originator_version,
                    details.pop("by", "account"),
                    msgspec.to_builtins(details),
                )
            )
        return history


_ENVELOPE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic", "account_id"}
