"""PostgresPriority lowers only its postmaster's children that run in a session of their own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.projection_process import PostgresPriority

# /proc/PID/autogroup exists but is empty where the kernel does not put this process in an autogroup (a container
# whose cgroup has a CPU controller of its own, as on CI)
pytestmark = pytest.mark.skipif(PostgresPriority(postmaster=0).own_group is None, reason="needs Linux autogroups")


def _autogroup(pid: int) -> tuple[str, str]:
    group, _, nice = Path(f"/proc/{pid}/autogroup").read_text().split()
    return group, nice


@pytest.fixture
def child():
    """A child in a session of its own, as every PostgreSQL child process is (it calls setsid())."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


def test_a_child_in_its_own_session_gets_the_lowest_share(child):
    ours = _autogroup(os.getpid())
    assert _autogroup(child.pid)[1] == "0"
    assert PostgresPriority(postmaster=os.getpid()).lower(child.pid)
    assert _autogroup(child.pid)[1] == "19"
    assert _autogroup(os.getpid()) == ours


def test_a_process_that_is_not_the_postmasters_child_is_left_alone(child):
    assert not PostgresPriority(postmaster=os.getpid() + 1_000_000).lower(child.pid)
    assert _autogroup(child.pid)[1] == "0"
    assert not PostgresPriority(postmaster=os.getpid()).lower(os.getpid())  # not our own child


def test_a_child_sharing_our_session_is_left_alone():
    ours = _autogroup(os.getpid())
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not PostgresPriority(postmaster=os.getpid()).lower(process.pid)
        assert _autogroup(os.getpid()) == ours
    finally:
        process.kill()
        process.wait()


def test_a_process_that_is_gone_is_no_error():
    process = subprocess.Popen(["true"])
    process.wait()
    assert not PostgresPriority(postmaster=os.getpid()).lower(process.pid)
