"""An embedded server's port is free and never one the kernel gives an outgoing connection, so the server can be
started again on it (api/embedded.py `free_port`)."""

from __future__ import annotations

import socket

from api.embedded import LOWEST_PORT, _ephemeral_from, free_port


def test_a_servers_port_is_free_and_below_the_ephemeral_range():
    for _ in range(20):
        port = free_port()
        assert LOWEST_PORT <= port < _ephemeral_from()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))  # free: binds
