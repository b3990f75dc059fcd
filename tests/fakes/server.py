"""Run an ASGI app on a free loopback port in a background thread (real HTTP, for fakes)."""

from __future__ import annotations

import asyncio
import threading
import time

import uvicorn

from api.embedded import free_port


class BackgroundServer:
    def __init__(self, app, host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level="warning", access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join(10)
