"""How current a read-model answer is."""

from __future__ import annotations

from datetime import datetime

import msgspec


class AsOf(msgspec.Struct):
    """How current a read-model answer is: the stream position and the time of that event."""

    position: int
    time: datetime | None
