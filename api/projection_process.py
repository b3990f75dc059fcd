"""The projection worker as a child process of `mesh up`, and the low CPU share it gives its work in the
embedded PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import weakref
from pathlib import Path

import psycopg

from api.embedded import LOWEST_NICE, EmbeddedServerError, child_setup, children_of, running_idle, stop_process

BACKGROUND_POSTGRES = "MESH_BACKGROUND_POSTGRES"  # tells the projection worker the embedded postmaster's pid
BACKGROUND_WORKER = "MESH_BACKGROUND_WORKER"  # tells it that it is `mesh up`'s: idle CPU priority once started


class PostgresPriority:
    """Gives the embedded PostgreSQL's work for the read models the lowest CPU share (Linux autogroups).

    Every PostgreSQL child process calls setsid(). With the kernel's autogroups (`sched_autogroup_enabled`)
    each session is a scheduling group of its own with a full CPU share, so the SCHED_IDLE it inherits from
    the postmaster counts only inside that group: a connection running a projection's batch would hold a CPU
    for milliseconds while a request waits for it (`perf sched` shows it during bench/gateway.py). What counts across
    groups is the group's own nice value, /proc/PID/autogroup. Lowered: the projection worker's own
    connections and PostgreSQL's maintenance processes. Not the other connections or the I/O workers, which
    serve the API and the gateway. Where autogroups do not exist this does nothing."""

    MAINTENANCE = ("checkpointer", "background writer", "walwriter", "autovacuum")

    def __init__(self, postmaster: int):
        self.postmaster = postmaster
        self._lowered: weakref.WeakSet[psycopg.AsyncConnection] = weakref.WeakSet()  # the connections lowered
        try:
            self.own_group: str | None = Path("/proc/self/autogroup").read_text().split()[0]
        except (OSError, IndexError):
            self.own_group = None  # no autogroups here

    def lower_connection(self, conn: psycopg.AsyncConnection) -> None:
        """Lower the backend of one of the worker's connections once the worker runs at idle priority itself (Mesh
        has started, api.embedded.lower_priority): until then its connections serve Mesh's start."""
        if conn not in self._lowered and running_idle():
            self.lower(conn.info.backend_pid)
            self._lowered.add(conn)

    def lower(self, pid: int) -> bool:
        """Lower `pid`'s group if it is a child of our postmaster (never some other process of that pid)."""
        if self.own_group is None:
            return False
        proc = Path(f"/proc/{pid}")
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) != self.postmaster:
                return False
            if (proc / "autogroup").read_text().split()[0] == self.own_group:
                return False  # it shares our session (it did not call setsid): lowering it would lower us
            (proc / "autogroup").write_text(str(LOWEST_NICE))
            return True
        except (OSError, ValueError, IndexError):
            return False

    def lower_maintenance(self) -> None:
        """Lower the maintenance processes running now (autovacuum workers come and go)."""
        for pid in children_of(self.postmaster):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and title[10:].startswith(self.MAINTENANCE):
                self.lower(pid)


class ProjectionProcess:
    """`mesh projections` as a child of `mesh up`: the read models are built in their own process, so their
    batches never hold up a request on the gateway's event loop (p99 in bench/gateway.py)."""

    def __init__(
        self,
        nats_url: str,
        database_url: str,
        stream: str,
        postmaster: int | None = None,
        cpus: frozenset[int] | None = None,
        idle: bool = True,
    ):
        self.cpus = cpus  # see api.embedded.background_cpus
        self.env = {**os.environ, "MESH_NATS_URL": nats_url, "MESH_DATABASE_URL": database_url, "MESH_STREAM": stream}
        if idle:  # idle priority once started (MESH_BACKGROUND_PRIORITY)
            self.env[BACKGROUND_WORKER] = "1"
        if postmaster is not None:
            self.env[BACKGROUND_POSTGRES] = str(postmaster)
        self.process: subprocess.Popen | None = None

    def start(self) -> "ProjectionProcess":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api.cli", "projections"],
            env=self.env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=child_setup(self.cpus),
        )
        ready = self.process.stdout.readline() if self.process.stdout else b""  # "projections running: ..."
        if not ready.startswith(b"projections running"):
            self.stop()
            raise EmbeddedServerError("the projection worker did not start (its error is above)")
        self.process.stdout.close()  # it prints nothing more; told so (BACKGROUND_WORKER), it lowers its priority next
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
