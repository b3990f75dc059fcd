"""The docs stay true to the code: every event with its fields, every route, setting and CLI command is
documented where the README says it is; the README's two commands are the ones CI runs; every link resolves
inside the repository."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import msgspec
import pytest

from api.app import create_litestar
from api.cli import main
from api.settings import Settings
from domain.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
PAGES = [README, ROOT / "bench" / "README.md", *sorted(DOCS.glob("*.md"))]
PRODUCT = ("domain", "commands", "projections", "gateway", "api")
ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}  # described once, not per row


def fields(cls: type) -> list[str]:
    if issubclass(cls, msgspec.Struct):
        return list(cls.__struct_fields__)
    return [f.name for f in dataclasses.fields(cls) if f.name not in ENVELOPE]


def section(text: str, heading: str) -> str:
    """The text under a `## heading` line, up to the next heading of that level."""
    start = text.index(f"\n## {heading}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_every_event_is_in_the_registry_with_its_fields():
    text = (DOCS / "events.md").read_text()
    missing = []
    for name, cls in EVENT_TYPES.items():
        if name == "usage.recorded":  # a table of its own, one row per field (some rows name two)
            usage = text.split("## Usage", 1)[1]
            missing += [f"{name}.{f}" for f in fields(cls) if f"`{f}`" not in usage]
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
    gateway = (ROOT / "gateway" / "app.py").read_text()
    for path, method in re.findall(r'path == "(/v1/[a-z/]+)" and method == "(\w+)"', gateway):
        if (method, path) not in documented:
            missing.append(f"{method} {path}")
    assert not missing, f"add to docs/contracts.md: {missing}"


def test_every_setting_is_in_the_configuration_table():
    text = (DOCS / "configuration.md").read_text()
    missing = [f"MESH_{f.upper()}" for f in Settings.__struct_fields__ if f"| `MESH_{f.upper()}` |" not in text]
    assert not missing, f"add a row to the settings table of docs/configuration.md: {missing}"


def test_every_setting_is_described_once():
    """A row of a settings table for a variable anywhere but docs/configuration.md is a second description."""
    again = [
        f"{page.relative_to(ROOT)}: MESH_{f.upper()}"
        for page in PAGES
        if page.name != "configuration.md"
        for f in Settings.__struct_fields__
        if re.search(rf"^\| `MESH_{f.upper()}`", page.read_text(), re.M)
    ]
    assert not again, f"settings are described in docs/configuration.md only: {again}"


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_cli_command_and_option_is_in_the_contracts(capsys):
    cli = section((DOCS / "contracts.md").read_text(), "CLI")
    top = _help(capsys)
    commands = re.search(r"\{([\w,-]+)\}", top).group(1).split(",")
    missing = [option for option in re.findall(r"(--[\w-]+)", top) if option != "--help" and option not in cli]
    for command in commands:
        if f"`mesh {command}" not in cli:
            missing.append(f"mesh {command}")
        usage = _help(capsys, command)
        missing += [f"mesh {command} {o}" for o in re.findall(r"(--[\w-]+)", usage) if o != "--help" and o not in cli]
        for choices in re.findall(r"\{([\w,-]+)\}", usage):  # subcommand actions such as quarantine|retry
            missing += [f"mesh {command} {c}" for c in choices.split(",") if f"mesh {command} {c}" not in cli]
    assert not missing, f"add to the CLI table of docs/contracts.md: {missing}"


def _readme_command(label: str) -> str:
    """The one-line shell command in the ```sh block that follows the README line starting with `label`."""
    match = re.search(rf"^{re.escape(label)}[^\n]*\n\n```sh\n([^\n]+)\n```", README.read_text(), re.M)
    assert match, f"README.md: no command block after {label!r}"
    return match.group(1)


def test_the_readme_test_command_is_what_ci_runs():
    command = _readme_command("Run the tests")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert command in ci, f".ci/run must run the README's test command as it is: {command}"
    assert command.endswith("&& .venv/bin/pytest -q"), "the test command runs the whole suite"


def test_the_readme_product_command_installs_as_the_tests_do_and_runs_mesh_up():
    product, tests = _readme_command("Run the product"), _readme_command("Run the tests")
    install = tests.removesuffix(" && .venv/bin/pytest -q").replace("-e '.[test]'", "-e .")
    assert product == f"{install} && .venv/bin/mesh up"
    assert re.search(r'^mesh = "api\.cli:main"$', (ROOT / "pyproject.toml").read_text(), re.M)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)  # a `#` in a code block is no heading
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_link_in_the_docs_resolves_inside_the_repository():
    broken = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, f"links that do not resolve: {broken}"


def test_every_markdown_file_named_in_the_docs_and_the_code_exists():
    """The repository stands on its own: a page or a comment names only files it holds."""
    sources = PAGES + [p for package in PRODUCT for p in (ROOT / package).rglob("*.py")]
    missing = []
    for source in sources:
        for name in set(re.findall(r"(?<![\w./-])([\w./-]+\.md)\b", source.read_text())):
            if not any((base / name).resolve().exists() for base in (source.parent, ROOT, DOCS)):
                missing.append(f"{source.relative_to(ROOT)}: {name}")
    assert not missing, f"names of files the repository does not hold: {missing}"
