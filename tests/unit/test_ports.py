"""The test suite's ports for servers it restarts are free and never ones the kernel gives connections
(tests/ports.py)."""

from __future__ import annotations

import socket

from tests.ports import LOWEST, _ephemeral_from, stable_port


def test_a_stable_port_is_free_and_below_the_ephemeral_range():
    for _ in range(20):
        port = stable_port()
        assert LOWEST <= port < _ephemeral_from()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free: binds
