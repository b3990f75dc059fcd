"""Ports for the servers a test stops and starts again on the same address.

A port the kernel hands out for a listener bound to port 0 comes from its ephemeral range, the range every outgoing
connection's local port is taken from too: between a server's stop and its restart, any client on the machine may
be given that port, and the restart fails with "Address already in use". A port below that range is never given
to a connection; only another test choosing the same one at random could take it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST = 10_000  # the lowest port chosen
EPHEMERAL_FROM = 32_768  # Linux's default start of the ephemeral range, where the kernel does not say
ATTEMPTS = 200


def _ephemeral_from() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return EPHEMERAL_FROM


def stable_port(host: str = "127.0.0.1") -> int:
    """A free port below the ephemeral range (random, so that parallel test workers do not pick alike)."""
    highest = max(_ephemeral_from() - 1, LOWEST + ATTEMPTS)
    for _ in range(ATTEMPTS):
        port = random.randint(LOWEST, highest)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port from {LOWEST} to {highest}")
