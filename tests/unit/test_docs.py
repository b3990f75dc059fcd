"""docs/ stays true to the code: every event with its fields, every route and every setting is documented."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import msgspec

from api.app import create_litestar
from api.settings import Settings
from domain.events import EVENT_TYPES

DOCS = Path(__file__).resolve().parents[2] / "docs"
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}  # described once, not per row


def fields(cls: type) -> list[str]:
    if issubclass(cls, msgspec.Struct):
        return list(cls.__struct_fields__)
    return [f.name for f in dataclasses.fields(cls) if f.name not in ENVELOPE]


def test_every_event_is_in_the_catalogue_with_its_fields():
    text = (DOCS / "events.md").read_text()
    missing = []
    for name, cls in EVENT_TYPES.items():
        if name == "usage.recorded":  # a table of its own, one row per field (some rows name two)
            section = text.split("## Usage", 1)[1]
            missing += [f"{name}.{f}" for f in fields(cls) if f"`{f}`" not in section]
            continue
        row = next((line for line in text.splitlines() if line.startswith(f"| `{name}` |")), None)
        if row is None:
            missing.append(name)
            continue
        missing += [f"{name}.{f}" for f in fields(cls) if f"`{f}:" not in row]
    assert not missing, f"add to docs/events.md: {missing}"


def test_every_route_is_in_the_contracts():
    text = (DOCS / "contracts.md").read_text()
    documented = set(re.findall(r"^\| (GET|POST|PUT|PATCH|DELETE) \| `([^`]+)`", text, re.M))
    app = create_litestar(runtime=None)
    missing = []
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
        for handler in getattr(route, "route_handlers", []):
            missing += [
                f"{m} {path}"
                for m in handler.http_methods
                if m not in ("OPTIONS", "HEAD") and (m, path) not in documented
            ]  # HEAD comes with GET
    gateway = (Path(__file__).resolve().parents[2] / "gateway" / "app.py").read_text()
    for path, method in re.findall(r'path == "(/v1/[a-z/]+)" and method == "(\w+)"', gateway):
        if (method, path) not in documented:
            missing.append(f"{method} {path}")
    assert not missing, f"add to docs/contracts.md: {missing}"


def test_every_setting_is_in_the_contracts():
    text = (DOCS / "contracts.md").read_text()
    missing = [f"MESH_{f.upper()}" for f in Settings.__struct_fields__ if f"`MESH_{f.upper()}`" not in text]
    assert not missing, f"add to docs/contracts.md: {missing}"
