"""The embedded servers let in only who has their password, keep it, and upgrade a cluster made without one."""

from __future__ import annotations

import asyncio
import stat
import os
from pathlib import Path

import nats
import psycopg
import pytest

from api.embedded import NATS_PASSWORD_PREFIX, EmbeddedServerError, NatsServer
from api.postgres_server import PostgresServer

# what an older Mesh left: initdb --auth=trust, no password file
OLD_HBA = "local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n"


def refused(conninfo: str) -> str:
    with pytest.raises(psycopg.OperationalError) as caught:
        psycopg.connect(conninfo, connect_timeout=3).close()
    return str(caught.value)


def private(path: Path) -> bool:
    return stat.S_IMODE(path.stat().st_mode) == 0o600


def test_postgres_needs_its_password_over_tcp_and_the_socket(postgres_server):
    pg = postgres_server
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    assert "password authentication failed" in refused(pg.url.replace(pg.password, "wrong"))
    assert "no password supplied" in refused(f"host=127.0.0.1 port={pg.port} user=postgres dbname=postgres")
    assert "no password supplied" in refused(f"host={pg.data_dir} port={pg.port} user=postgres dbname=postgres")
    assert private(pg.data_dir.with_name(pg.data_dir.name + ".password"))
    assert "trust" not in [
        line.split()[-1]
        for line in (pg.data_dir / "pg_hba.conf").read_text().splitlines()
        if line and not line.startswith("#")
    ]


def test_an_old_trust_cluster_is_upgraded_and_keeps_its_data(tmp_path):
    pg = PostgresServer(tmp_path / "postgres").start()
    try:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("create table kept (n int)")
            conn.execute("insert into kept values (42)")
    finally:
        pg.stop()
    (pg.data_dir / "pg_hba.conf").write_text(OLD_HBA)
    password_file = pg.data_dir.with_name("postgres.password")
    password_file.unlink()

    upgraded = PostgresServer(tmp_path / "postgres").start()
    try:
        assert upgraded.password != pg.password and private(password_file)
        with psycopg.connect(upgraded.url) as conn:
            assert conn.execute("select n from kept").fetchone() == (42,)
        assert "no password supplied" in refused(f"host=127.0.0.1 port={upgraded.port} user=postgres dbname=postgres")
        assert "no password supplied" in refused(
            f"host={upgraded.data_dir} port={upgraded.port} user=postgres dbname=postgres"
        )
    finally:
        upgraded.stop()


async def test_nats_needs_its_password_which_a_restart_keeps(tmp_path):
    server = NatsServer(tmp_path / "nats").start()
    try:
        nc = await nats.connect(server.url)
        await nc.close()
        for anonymous in (f"nats://127.0.0.1:{server.port}", f"nats://mesh:wrong@127.0.0.1:{server.port}"):
            with pytest.raises(Exception, match="Authorization Violation"):
                await nats.connect(anonymous, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
        cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        assert server.password.encode() not in cmdline  # every local user can read a command line
        assert server.password not in (tmp_path / "nats" / "auth.conf").read_text()
        assert private(tmp_path / "nats.password")
    finally:
        server.stop()
    # nats-server reads a variable's value as a literal: one that looks like a date or a number fails to parse
    (tmp_path / "dated").mkdir()
    (tmp_path / "dated.password").write_text("2024-01-01T00")
    with pytest.raises(EmbeddedServerError):
        NatsServer(tmp_path / "dated").start(timeout=5)
    assert server.password.startswith(NATS_PASSWORD_PREFIX)  # so a generated one always reads as a string
    again = NatsServer(tmp_path / "nats", port=server.port).start()
    try:
        assert again.url == server.url
        nc = await asyncio.wait_for(nats.connect(again.url), 5)
        await nc.close()
    finally:
        again.stop()


def test_nats_runs_with_a_lazier_garbage_collector_unless_told_otherwise(tmp_path, monkeypatch):
    from api.embedded import NATS_GOGC, NATS_MEMORY_MIN_MB

    def go_environment(server: NatsServer) -> dict[str, str]:
        environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
        pairs = [item.decode().split("=", 1) for item in environ if item.startswith((b"GOGC=", b"GOMEMLIMIT="))]
        return dict(pairs)

    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)
    server = NatsServer(tmp_path / "default").start()
    try:
        found = go_environment(server)
        assert found["GOGC"] == NATS_GOGC
        limit_mb = int(found["GOMEMLIMIT"].removesuffix("MiB"))
        total_mb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
        assert NATS_MEMORY_MIN_MB <= limit_mb <= max(NATS_MEMORY_MIN_MB, total_mb // 4)
    finally:
        server.stop()
    monkeypatch.setenv("GOGC", "150")
    monkeypatch.setenv("GOMEMLIMIT", "1GiB")
    server = NatsServer(tmp_path / "told").start()
    try:
        assert go_environment(server) == {"GOGC": "150", "GOMEMLIMIT": "1GiB"}
    finally:
        server.stop()
