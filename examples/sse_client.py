"""Follow your Mesh account's events live (GET /api/events, Server-Sent Events), resuming where you left off.

    MESH_URL=http://127.0.0.1:8080 MESH_TOKEN=mt-... python examples/sse_client.py [--types usage.recorded]
        [--position-file position.txt]

Prints one line per event. The position of the last event handled is kept in the position file, so a restart
(or a dropped connection) goes on after it with `Last-Event-ID`: nothing is skipped, nothing printed twice.
Needs httpx (`pip install httpx`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import httpx

RECONNECT_SECONDS = 1.0  # wait before reconnecting after the stream dropped
READ_TIMEOUT = 60.0  # longer than the server's heartbeat interval (MESH_EVENTS_HEARTBEAT_SECONDS, 15 s)


class Event(NamedTuple):
    id: int  # the stream position
    name: str  # e.g. usage.recorded
    data: dict  # {position, time, name, aggregate_id, version, data}


def events(
    url: str,
    token: str,
    last_event_id: int | None = None,
    types: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    path: str = "/api/events",
) -> Iterator[Event]:
    """The account's events after `last_event_id` (None: from the next one appended), while the connection lasts
    (`path` /admin/events with the operator token: every account's)."""
    headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
    if last_event_id is not None:
        headers["last-event-id"] = str(last_event_id)
    params = {"types": types} if types else {}
    timeout = httpx.Timeout(10.0, read=read_timeout)
    with httpx.stream("GET", f"{url}{path}", headers=headers, params=params, timeout=timeout) as answer:
        if answer.status_code != 200:
            answer.read()
            raise RuntimeError(f"GET {path} answered {answer.status_code}: {answer.text}")
        fields: dict[str, str] = {}
        for line in answer.iter_lines():
            if not line:  # a blank line ends one message
                if "data" in fields:
                    yield Event(int(fields["id"]), fields.get("event", "message"), json.loads(fields["data"]))
                fields = {}
            elif line.startswith(":"):  # a comment: the server's heartbeat
                continue
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value


def describe(event: Event) -> str:
    data = event.data["data"]
    if event.name == "usage.recorded":
        return (
            f"{event.id} usage.recorded trace={data['trace_id']} key={data['key_id']} model={data['model']} "
            f"cost_pico_usd={data['cost']}"
        )
    return f"{event.id} {event.name} {event.data['aggregate_id']}"


def save(position_file: Path, position: int) -> None:
    """Replace the file in one step: stopped mid-write, it still holds the old position or the new one."""
    scratch = position_file.with_name(position_file.name + ".new")
    scratch.write_text(str(position))
    os.replace(scratch, position_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", help="comma-separated event names (default: all)")
    parser.add_argument("--position-file", default="sse_position.txt", help="where the last position is kept")
    args = parser.parse_args()
    url, token = os.environ.get("MESH_URL", "http://127.0.0.1:8080"), os.environ["MESH_TOKEN"]
    position_file = Path(args.position_file)
    position = int(position_file.read_text()) if position_file.exists() else None
    while True:
        try:
            for event in events(url, token, position, args.types):
                print(describe(event), flush=True)
                position = event.id
                save(position_file, position)  # handled: a restart goes on after it
        except (httpx.HTTPError, RuntimeError) as exc:
            print(f"stream ended ({exc}); reconnecting", file=sys.stderr, flush=True)
        time.sleep(RECONNECT_SECONDS)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl+C: the position file says where to go on from
        pass
