"""uvicorn's server as `mesh up` runs it: it also says the moment a stop signal arrives.

uvicorn answers SIGINT and SIGTERM by draining its connections, and only then does `mesh up` stop its runtime. A
service manager signals every process of the unit at once, so the embedded servers and the projection worker end
during that drain; the supervisor must know by then that they are not to be started again."""

from __future__ import annotations

from types import FrameType
from typing import Callable

import uvicorn


class SignalledServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_signal: Callable[[], None]):
        super().__init__(config)
        self._on_signal = on_signal  # runs inside the signal handler: it must only set a flag

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_signal()
        super().handle_exit(sig, frame)
