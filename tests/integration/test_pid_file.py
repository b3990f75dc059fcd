"""A stale postmaster.pid is removed before the embedded PostgreSQL starts: also when its process is a zombie."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from api.postgres_server import _pid_alive


def test_a_running_process_is_alive_and_a_zombie_or_a_gone_one_is_not(tmp_path):
    pid_file = tmp_path / "postmaster.pid"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pid_file.write_text(f"{child.pid}\n/data\n")
        assert _pid_alive(pid_file)
        child.kill()
        deadline = time.monotonic() + 5
        while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # a zombie still takes signals: that alone said "alive"
        assert not _pid_alive(pid_file)
    finally:
        child.kill()
        child.wait()
    assert not _pid_alive(pid_file)  # reaped: gone
    pid_file.write_text("not a pid\n")
    assert not _pid_alive(pid_file)
