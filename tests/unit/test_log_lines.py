"""MESH_LOG_FORMAT=json: one JSON object per line, with the trace id of the request served where there is one."""

import json
import logging
import uuid

from api.log_lines import JsonLines
from gateway.trace_ids import current_trace


def record(message: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("mesh.gateway", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_line_is_one_json_object_and_carries_the_trace_id_of_its_request():
    line = JsonLines().format(record("provider %s failed with HTTP %d", "acme", 500))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "provider acme failed with HTTP 500" and parsed["level"] == "warning"
    assert parsed["logger"] == "mesh.gateway" and parsed["time"].endswith("+00:00") and "trace_id" not in parsed
    trace = uuid.uuid4()
    token = current_trace.set(trace)
    try:
        assert json.loads(JsonLines().format(record("x")))["trace_id"] == str(trace)
    finally:
        current_trace.reset(token)


def test_an_exception_stays_inside_its_line():
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        import sys

        line = JsonLines().format(record("failed", exc_info=sys.exc_info()))
    assert "\n" not in line and "ValueError: boom" in json.loads(line)["exception"]
