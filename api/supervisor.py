"""`mesh up` keeps its child processes running: the embedded nats-server and PostgreSQL and the projection worker.

A child that dies (a crash, an OOM kill, `kill -9`) is reaped at once (no zombie), logged with how it ended, and
started again on the same port and data, after a pause that doubles on every failed try (a PostgreSQL killed
with -9 refuses to start until its orphaned backends have gone). Clients recover by themselves: nats-py
reconnects, and the PostgreSQL pools check a connection before handing it out. `/health` shows each child.

Once `mesh up` is told to stop (`stand_down`), a child that ends is left stopped: a service manager signals every
process of the unit at once, so the children end while `mesh up` still answers its last requests.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import time
from typing import Awaitable, Callable, Protocol

import msgspec

from api.embedded import EmbeddedServerError
from gateway.pause import stopped_within

log = logging.getLogger("mesh.supervisor")

POLL_SECONDS = 0.2  # how often a child is checked (a waitpid each: nothing)
FIRST_DELAY = 0.2  # seconds before the first restart
MAX_DELAY = 30.0  # the longest pause between tries
STABLE_SECONDS = 60.0  # a child that ran this long before dying starts over at FIRST_DELAY


class Child(Protocol):
    process: subprocess.Popen | None

    def start(self) -> object: ...

    def stop(self) -> None: ...


class ChildStatus(msgspec.Struct):
    name: str
    state: str  # "running" | "restarting" | "stopped" (it ended after Mesh was told to stop)
    pid: int | None
    restarts: int  # since `mesh up` started
    last_exit: str | None = None  # how it last ended, e.g. "killed by SIGKILL"


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Watched:
    def __init__(self, name: str, child: Child, after_restart: Callable[[], Awaitable[None]] | None):
        self.name = name
        self.child = child
        self.after_restart = after_restart
        self.state = "running"
        self.restarts = 0
        self.last_exit: str | None = None
        self.started = time.monotonic()
        self.delay = FIRST_DELAY

    def status(self) -> ChildStatus:
        process = self.child.process
        pid = process.pid if process is not None and self.state == "running" else None
        return ChildStatus(self.name, self.state, pid, self.restarts, self.last_exit)


class Supervisor:
    def __init__(self) -> None:
        self._watched: list[_Watched] = []
        self._standing_down = False

    def stand_down(self) -> None:
        """Mesh is stopping: a child that ends from now on is not started again. Only sets a flag, so a signal
        handler may call it."""
        self._standing_down = True

    def watch(self, name: str, child: Child, after_restart: Callable[[], Awaitable[None]] | None = None) -> None:
        """Keep `child` (already started) running; `after_restart` runs each time it was started again."""
        self._watched.append(_Watched(name, child, after_restart))

    def status(self) -> list[ChildStatus]:
        return [w.status() for w in self._watched]

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._keep(w, stop) for w in self._watched))

    async def _keep(self, watched: _Watched, stop: asyncio.Event) -> None:
        while not stop.is_set():
            process = watched.child.process
            code = process.poll() if process is not None else None  # poll() reaps it
            if code is None:
                await stopped_within(stop, POLL_SECONDS)
                continue
            if self._standing_down:
                watched.state, watched.last_exit = "stopped", describe_exit(code)
                return
            watched.state, watched.last_exit = "restarting", describe_exit(code)
            if time.monotonic() - watched.started >= STABLE_SECONDS:
                watched.delay = FIRST_DELAY
            log.warning(
                "%s (pid %d) %s; starting it again in %.1fs",
                watched.name,
                process.pid,
                watched.last_exit,
                watched.delay,
            )
            down = time.monotonic()
            while not await stopped_within(stop, watched.delay) and not self._standing_down:
                watched.delay = min(watched.delay * 2, MAX_DELAY)
                try:
                    await asyncio.to_thread(watched.child.start)
                except EmbeddedServerError as exc:
                    log.warning("%s did not start again (%s); next try in %.1fs", watched.name, exc, watched.delay)
                    continue
                watched.state, watched.started = "running", time.monotonic()
                watched.restarts += 1
                log.warning(
                    "%s is running again (pid %d), %.1fs after it ended",
                    watched.name,
                    watched.child.process.pid,
                    watched.started - down,
                )
                if watched.after_restart is not None:
                    try:
                        await watched.after_restart()
                    except Exception:
                        log.exception("after restarting %s", watched.name)
                break
