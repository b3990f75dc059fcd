"""Templates read model: each template's head (name, newest version, labels, archived) and every version.

The API lists and shows templates from it, and the gateway loads a template once per process from it
(then template events keep the gateway current). `revision` is the template aggregate's version the row
reflects, so a gateway can tell which of the events it heard on the wire are newer than what it loaded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from domain.events import event_names
from domain.template import Template
from domain.template_head import HEAD_EVENTS, TemplateHead
from projections.readmodel import Envelope


class TemplateRow(msgspec.Struct, frozen=True):
    template_id: UUID
    account_id: UUID
    name: str
    latest_version: int
    labels: dict[str, int]
    archived: bool
    revision: int
    created_at: datetime
    updated_at: datetime


class VersionRow(msgspec.Struct, frozen=True):
    template_id: UUID
    version: int
    description: str | None
    messages: list[dict[str, str]]
    defaults: dict[str, Any]
    created_at: datetime


class Templates:
    name = "templates"
    tables = ("templates", "template_versions")
    topics = event_names(HEAD_EVENTS)

    async def create_tables(self, cur: psycopg.AsyncCursor, t: dict[str, str]) -> None:
        await cur.execute(f"""
            create table if not exists {t["templates"]} (
                template_id uuid primary key,
                account_id uuid not null,
                name text not null,
                latest_version int not null,
                labels jsonb not null default '{{}}',
                archived boolean not null default false,
                revision int not null,
                created_at timestamptz not null,
                updated_at timestamptz not null
            );
            create table if not exists {t["template_versions"]} (
                template_id uuid not null,
                version int not null,
                description text,
                messages jsonb not null,
                defaults jsonb not null,
                created_at timestamptz not null,
                primary key (template_id, version)
            );
            create index if not exists {t["templates"]}_name on {t["templates"]} (account_id, name);
        """)

    async def apply(self, cur: psycopg.AsyncCursor, t: dict[str, str], batch: list[Envelope]) -> None:
        for item in batch:
            e = item.event
            if isinstance(e, Template.Created):
                head = TemplateHead.created(e)
                await cur.execute(
                    f"""insert into {t["templates"]} ({_HEAD_COLUMNS}, created_at, updated_at)
                        values (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                    (*_head_values(head), e.timestamp, e.timestamp),
                )
                await self._version(cur, t, e, 1)
                continue
            if isinstance(e, Template.VersionSaved):
                await self._version(cur, t, e, e.version)
            found = await cur.execute(
                f"select {_HEAD_COLUMNS} from {t['templates']} where template_id = %s",
                (e.originator_id,),
            )
            row = await found.fetchone()
            if row is None:
                continue
            head = TemplateHead(*row)
            head.apply(e)
            await cur.execute(
                f"""update {t["templates"]} set ({_HEAD_COLUMNS}) = (%s, %s, %s, %s, %s, %s, %s), updated_at = %s
                    where template_id = %s""",
                (*_head_values(head), e.timestamp, e.originator_id),
            )

    async def _version(self, cur: psycopg.AsyncCursor, t: dict[str, str], e, version: int) -> None:
        await cur.execute(
            f"""insert into {t["template_versions"]} (template_id, version, description, messages, defaults,
                created_at) values (%s, %s, %s, %s, %s, %s)""",
            (e.originator_id, version, e.description, Jsonb(e.messages), Jsonb(e.defaults), e.timestamp),
        )


# A template's row holds its head (domain/template_head.py) in these columns, and when it was created and changed.
_HEAD_COLUMNS = "template_id, account_id, name, latest_version, labels, archived, revision"


def _head_values(head: TemplateHead) -> tuple:
    """A head as the values of _HEAD_COLUMNS."""
    return (*msgspec.structs.astuple(head)[:4], Jsonb(head.labels), head.archived, head.revision)


# Queries (they read the views, i.e. the generation in service).

_COLUMNS = f"{_HEAD_COLUMNS}, created_at, updated_at"
_VERSION_COLUMNS = "template_id, version, description, messages, defaults, created_at"


async def templates_of(conn: psycopg.AsyncConnection, account_id: UUID, archived: bool = False) -> list[TemplateRow]:
    cur = await conn.execute(
        f"select {_COLUMNS} from templates where account_id = %s and (archived = false or %s) order by name",
        (account_id, archived),
    )
    return [TemplateRow(*r) for r in await cur.fetchall()]


async def template_of(conn: psycopg.AsyncConnection, account_id: UUID, template_id: UUID) -> TemplateRow | None:
    cur = await conn.execute(
        f"select {_COLUMNS} from templates where account_id = %s and template_id = %s", (account_id, template_id)
    )
    row = await cur.fetchone()
    return TemplateRow(*row) if row else None


async def template_named(conn: psycopg.AsyncConnection, account_id: UUID, name: str) -> TemplateRow | None:
    """The account's template of that name that is in use (archived ones have given their name up)."""
    cur = await conn.execute(
        f"select {_COLUMNS} from templates where account_id = %s and name = %s and not archived", (account_id, name)
    )
    row = await cur.fetchone()
    return TemplateRow(*row) if row else None


async def version_of(conn: psycopg.AsyncConnection, template_id: UUID, version: int) -> VersionRow | None:
    cur = await conn.execute(
        f"select {_VERSION_COLUMNS} from template_versions where template_id = %s and version = %s",
        (template_id, version),
    )
    row = await cur.fetchone()
    return VersionRow(*row) if row else None


async def versions_of(conn: psycopg.AsyncConnection, template_id: UUID) -> list[VersionRow]:
    cur = await conn.execute(
        f"select {_VERSION_COLUMNS} from template_versions where template_id = %s order by version", (template_id,)
    )
    return [VersionRow(*r) for r in await cur.fetchall()]


async def latest_versions(conn: psycopg.AsyncConnection, rows: list[TemplateRow]) -> dict[UUID, VersionRow]:
    """The newest version of each template, in one query."""
    if not rows:
        return {}
    cur = await conn.execute(
        f"""select {_VERSION_COLUMNS} from template_versions v
            join unnest(%s::uuid[], %s::int[]) as w(template_id, version) using (template_id, version)""",
        ([r.template_id for r in rows], [r.latest_version for r in rows]),
    )
    return {r[0]: VersionRow(*r) for r in await cur.fetchall()}
