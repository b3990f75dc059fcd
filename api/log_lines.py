"""How Mesh writes its log: plain lines for people, or one JSON object per line (MESH_LOG_FORMAT=json) for log
shippers, with the trace id of the request being served where there is one."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import msgspec

from gateway.trace_ids import current_trace

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    """`{"time", "level", "logger", "message", "trace_id"?, "exception"?}`, one per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        trace = current_trace.get()
        if trace is not None:
            line["trace_id"] = str(trace)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def configure(log_format: str = "text", level: int = logging.WARNING) -> None:
    """Set up the root logger once for every part of Mesh (the web framework adds none of its own)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
