"""Template use cases on the real event store (concurrent creates), and the templates read model projected and
rebuilt. (Renaming and archiving, on either event store: tests/unit/test_command_contract.py.)"""

from __future__ import annotations

import asyncio
import threading
import uuid

import nats
from psycopg_pool import AsyncConnectionPool

from commands.app import MeshApplication
from commands.stream import ensure_stream
from commands.prompt_templates import TemplateCommands
from domain.template import TemplateNameTaken
from projections import prompt_templates as read_model
from projections.readmodel import ensure_schema
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.source import StreamSource

TEMPLATES = read_model.Templates()
MESSAGES = [{"role": "user", "content": "Hi {{name}}"}]


def test_concurrent_creates_of_one_name_leave_exactly_one_template(nats_url, stream_name, app):
    account = uuid.uuid4()
    apps = [MeshApplication(nats_url, stream_name) for _ in range(4)]
    barrier = threading.Barrier(len(apps) * 2)
    outcomes: list[object] = []

    def create(application: MeshApplication) -> None:
        barrier.wait()
        try:
            outcomes.append(TemplateCommands(application).create(account, "greet", None, MESSAGES, None))
        except Exception as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=create, args=(a,)) for a in apps for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        a.close()
    losers = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 8 and len(losers) == 7 and all(isinstance(o, TemplateNameTaken) for o in losers)


async def test_the_read_model_follows_the_events_and_rebuilds_to_the_same_rows(
    nats_url, database_url, stream_name, app
):
    commands, account = TemplateCommands(app), uuid.uuid4()

    def write() -> uuid.UUID:
        t = commands.create(account, "greet", "first", MESSAGES, {"temperature": 0.3}).template
        commands.save(account, t.id, "greet", None, [{"role": "system", "content": "v2 {{x}}"}], {"stop": "END"})
        commands.label(account, t.id, "production", 1)
        commands.label(account, t.id, "staging", 2)
        commands.label(account, t.id, "production", 2)
        commands.unlabel(account, t.id, "staging")
        gone = commands.create(account, "old", None, MESSAGES, None).template
        commands.archive(account, gone.id)
        return t.id

    template_id = await asyncio.to_thread(write)
    nc = await nats.connect(nats_url)
    await ensure_stream(nc, stream_name)
    pool = AsyncConnectionPool(database_url, min_size=1, max_size=4, open=False)
    await pool.open()
    try:
        async with pool.connection() as conn:
            await ensure_schema(conn, [TEMPLATES])
        await ProjectionRunner(TEMPLATES, StreamSource(nc, stream_name), pool).catch_up()

        async def snapshot():
            async with pool.connection() as conn:
                rows = await read_model.templates_of(conn, account, archived=True)
                versions = await read_model.versions_of(conn, template_id)
                named = await read_model.template_named(conn, account, "old")
            return rows, versions, named

        rows, versions, named = await snapshot()
        live = {r.name: r for r in rows}
        assert live["greet"].latest_version == 2 and live["greet"].labels == {"production": 2}
        assert live["greet"].revision == 6 and live["old"].archived and named is None
        assert [(v.version, v.description, v.messages, v.defaults) for v in versions] == [
            (1, "first", MESSAGES, {"temperature": 0.3}),
            (2, None, [{"role": "system", "content": "v2 {{x}}"}], {"stop": "END"}),
        ]

        progress: list[tuple[int, int]] = []
        assert await rebuild(TEMPLATES, nc, pool, stream_name, lambda p, h: progress.append((p, h))) == 2
        assert progress and progress[-1][0] == progress[-1][1]
        assert await snapshot() == (rows, versions, named)
    finally:
        await pool.close()
        await nc.close()
