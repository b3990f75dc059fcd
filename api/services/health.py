"""How Mesh is: are NATS and PostgreSQL reachable, how far behind is each projection, has any set an event
aside, how full is the event log, and are the processes `mesh up` keeps running alive."""

from __future__ import annotations

import time

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.read_models import FOLLOWERS
from api.supervisor import ChildStatus, Supervisor
from commands.stream import STREAM_FULL_WARNING
from projections.quarantine import Quarantined, quarantined, retry
from projections.readmodel import position_of
from projections.source import StreamSource

POSTGRES_TIMEOUT = 2.0  # seconds to get a connection before PostgreSQL counts as unreachable


class ProjectionLag(msgspec.Struct):
    name: str
    position: int
    lag: int  # events behind the stream head


class HealthReport(msgspec.Struct):
    nats: str  # "ok" or "unreachable: <why>"
    postgres: str
    stream_head: int | None
    stream_bytes: int | None  # what the event log holds
    stream_max_bytes: int | None  # its limit (MESH_STREAM_MAX_BYTES)
    projections: list[ProjectionLag]
    quarantined: list[Quarantined]  # events a projection could not apply
    children: list[ChildStatus]

    @property
    def reachable(self) -> bool:
        """NATS, PostgreSQL and every child process are there: the service works."""
        return self.nats == "ok" and self.postgres == "ok" and all(c.state == "running" for c in self.children)

    @property
    def warnings(self) -> list[str]:
        """What a person should look at before it stops the service."""
        if self.stream_bytes is None or self.stream_max_bytes is None:
            return []
        return stream_warnings(self.stream_bytes, self.stream_max_bytes)

    @property
    def status(self) -> str:
        """ok, or degraded: unreachable, or set-aside events, or a log near full (the service still works)."""
        return "ok" if self.reachable and not self.quarantined and not self.warnings else "degraded"


def stream_warnings(used: int, limit: int) -> list[str]:
    if limit <= 0 or used < STREAM_FULL_WARNING * limit:
        return []
    return [
        f"the event log holds {used} of its {limit} bytes ({used / limit:.0%}); when full, every change and "
        "request is refused: raise MESH_STREAM_MAX_BYTES (and give NATS the disk) soon"
    ]


class HealthService:
    def __init__(self, source: StreamSource, pool: AsyncConnectionPool, supervisor: Supervisor):
        self.source = source
        self.pool = pool
        self.supervisor = supervisor
        self._last: tuple[float, HealthReport] | None = None  # the newest report and when it was made (monotonic)

    async def check(self) -> HealthReport:
        head: int | None = None
        used: int | None = None
        limit: int | None = None
        nats_state = "ok"
        try:
            head, used, limit = await self.source.state()
        except Exception as exc:
            nats_state = f"unreachable: {type(exc).__name__}"
        pg_state = "ok"
        projections = []
        set_aside: list[Quarantined] = []
        try:
            async with self.pool.connection(timeout=POSTGRES_TIMEOUT) as conn:
                for model in FOLLOWERS:
                    position, _ = await position_of(conn, model)
                    projections.append(ProjectionLag(model.name, position, max(0, (head or position) - position)))
                set_aside = await quarantined(conn)
        except Exception as exc:
            pg_state = f"unreachable: {type(exc).__name__}"
        report = HealthReport(nats_state, pg_state, head, used, limit, projections, set_aside, self.supervisor.status())
        self._last = (time.monotonic(), report)
        return report

    async def recent(self, max_age: float) -> HealthReport:
        """The newest report if it is at most `max_age` seconds old (what GET /health or an earlier caller found),
        else a new one: for a caller that can be a little behind and need not pay for the checks each time."""
        last = self._last
        if last is not None and time.monotonic() - last[0] <= max_age:
            return last[1]
        return await self.check()

    async def retry_quarantined(self) -> tuple[int, int]:
        """Apply every quarantined event again (after a fix), as `mesh projections retry` does: (applied, still
        failing)."""
        applied = failing = 0
        for model in FOLLOWERS:
            done, left = await retry(model, self.source, self.pool)
            applied, failing = applied + done, failing + left
        return applied, failing
