"""The servers and the port `mesh` runs on: external NATS and PostgreSQL from the settings, or embedded ones it
starts; `MeshError` when it cannot."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from api.settings import Settings


class MeshError(RuntimeError):
    """A `mesh` command could not do what it was asked; the message is one line for the operator."""


def listen(host: str, port: int) -> socket.socket:
    """Bind the API's port before anything else starts, and keep it for uvicorn: between a check and a later
    bind, an embedded server picking a free port (or any other process) could take it, and `mesh up` failed
    after starting everything with 'address already in use'."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise MeshError(f"cannot listen on {host}:{port}: {exc.strerror}; set MESH_PORT to another port") from None
    return sock


class Servers:
    """The NATS and PostgreSQL this process uses: external ones from the settings, or embedded ones it starts."""

    def __init__(self, settings: Settings):
        from api.embedded import background_cpus

        self.settings = settings
        self.started: list = []
        self.children: dict = {}  # what `mesh up` keeps running (api.supervisor), by name
        self.postgres_pid: int | None = None  # the embedded postmaster this process started
        try:  # where the servers and the projection worker run
            self.background_cpus = background_cpus(settings.background_cpus)
        except ValueError as exc:
            raise MeshError(f"MESH_BACKGROUND_CPUS={settings.background_cpus!r}: {exc}") from None

    def __enter__(self) -> "Servers":
        from api.embedded import EmbeddedServerError, NatsServer
        from api.postgres_server import PostgresServer

        s = self.settings
        running = self._running()
        if running is not None and not (s.nats_url and s.database_url):
            # `mesh up` already runs the embedded servers of this data dir: use them, start nothing
            self.nats_url = s.nats_url or running["nats_url"]
            self.database_url = s.database_url or running["database_url"]
            return self
        private_dir(s.data_path)
        try:
            if s.nats_url:
                self.nats_url = s.nats_url
            else:
                nats_server = NatsServer(s.data_path / "nats", cpus=self.background_cpus).start()
                self.started.append(nats_server)
                self.children["nats-server"] = nats_server
                self.nats_url = nats_server.url
            if s.database_url:
                self.database_url = s.database_url
            else:
                pg = PostgresServer(s.data_path / "postgres", cpus=self.background_cpus).start()
                self.started.append(pg)
                self.children["postgres"] = pg
                self.database_url = pg.url
                self.postgres_pid = pg.process.pid
        except EmbeddedServerError as exc:
            self.__exit__()
            raise MeshError(str(exc)) from None
        if self.started:  # the URLs carry the passwords: for this user only
            self._run_file.unlink(missing_ok=True)
            fd = os.open(self._run_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                json.dump({"pid": os.getpid(), "nats_url": self.nats_url, "database_url": self.database_url}, file)
        return self

    def __exit__(self, *_) -> None:
        if self.started:
            self._run_file.unlink(missing_ok=True)
        for server in reversed(self.started):
            server.stop()

    @property
    def _run_file(self) -> Path:
        return self.settings.data_path / "running.json"

    def _running(self) -> dict | None:
        """The embedded servers a live `mesh up` started for this data dir, if any."""
        try:
            running = json.loads(self._run_file.read_text())
            os.kill(running["pid"], 0)
            return running
        except (OSError, ValueError, KeyError):
            return None


def running_database(settings: Settings) -> str | None:
    """The read models' database of the Mesh this command runs beside: MESH_DATABASE_URL, or the embedded
    PostgreSQL of a live `mesh up` of this data dir; None: neither (nothing is started)."""
    if settings.database_url:
        return settings.database_url
    running = Servers(settings)._running()
    return running["database_url"] if running is not None else None


def private_dir(path: Path) -> None:
    """Make the data dir readable by this user only (it holds the servers' data and their passwords)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o067:  # one an older version made (group traversal is the embedded PostgreSQL's)
        path.chmod(0o700)
