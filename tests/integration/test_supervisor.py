"""The supervisor reaps a child that died, starts it again with backoff, and says so in its status; once Mesh is
told to stop, a child that ends stays stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess

from api.embedded import EmbeddedServerError
from api.supervisor import Supervisor, describe_exit


class Sleeper:
    """A real child process; its next `failures` starts fail the way an embedded server's do."""

    def __init__(self, failures: int = 0):
        self.process: subprocess.Popen | None = None
        self.failures = failures
        self.starts = 0

    def start(self) -> "Sleeper":
        self.starts += 1
        if self.failures:
            self.failures -= 1
            raise EmbeddedServerError("port still taken")
        self.process = subprocess.Popen(["sleep", "60"])
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def until(check, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not in time"
        await asyncio.sleep(0.02)


def reaped(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # not our child any more: waited for already
    return False


async def test_a_killed_child_is_reaped_and_started_again_with_backoff(caplog):
    child = Sleeper().start()
    restarted = []
    supervisor = Supervisor()

    async def after() -> None:
        restarted.append(child.process.pid)

    supervisor.watch("sleeper", child, after)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        first = child.process.pid
        [status] = supervisor.status()
        assert (status.state, status.pid, status.restarts, status.last_exit) == ("running", first, 0, None)

        child.failures = 2  # the first two tries fail: it keeps trying, waiting longer each time
        os.kill(first, signal.SIGKILL)
        await until(lambda: supervisor.status()[0].state == "restarting")
        assert supervisor.status()[0].pid is None and supervisor.status()[0].last_exit == "killed by SIGKILL"
        assert reaped(first)  # no zombie left behind
        await until(lambda: supervisor.status()[0].state == "running")
        [status] = supervisor.status()
        assert status.restarts == 1 and status.pid == child.process.pid != first and child.starts == 4
        assert restarted == [child.process.pid]
        assert "did not start again (port still taken)" in caplog.text
        assert "sleeper is running again" in caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        child.stop()
    assert child.starts == 4  # stopping the supervisor starts nothing


async def test_a_child_that_ends_once_mesh_is_stopping_is_not_started_again(caplog):
    """What a service manager does: it signals `mesh up` (whose handler stands the supervisor down) and every
    child at once, and the children end while `mesh up` still drains its connections."""
    child = Sleeper().start()
    supervisor = Supervisor()
    supervisor.watch("sleeper", child)
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))
    try:
        first = child.process.pid
        supervisor.stand_down()
        os.kill(first, signal.SIGTERM)
        await until(lambda: supervisor.status()[0].state == "stopped")
        [status] = supervisor.status()
        assert (status.pid, status.restarts, status.last_exit) == (None, 0, "killed by SIGTERM")
        assert reaped(first)
        await asyncio.sleep(0.5)  # past the first restart's pause
        assert child.starts == 1 and supervisor.status()[0].state == "stopped"
        assert "starting it again" not in caplog.text
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        child.stop()


def test_exits_are_described():
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exited with code 1"
