"""Product code outside domain/ names an event by its class, never by its name: the catalogue
(domain/events.py) is the one place a name is written."""

import ast
import re
from pathlib import Path

from domain.events import EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("projections", "gateway", "api", "commands")  # docs, tests and domain/ itself are excepted
# a name standing alone in a string (not part of a longer dotted word such as a file name)
NAMED = re.compile(r"(?<![\w.])(" + "|".join(re.escape(name) for name in EVENT_TYPES) + r")(?![\w.])")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings (they describe, they do not dispatch)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def literals(source: str) -> list[tuple[int, str]]:
    """(line, name) of every event name written in a string of this Python source, f-string parts included."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        (node.lineno, match)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        for match in NAMED.findall(node.value)
    ]


def test_the_scan_finds_names_in_strings_and_f_strings_but_not_in_docstrings_or_longer_words():
    source = '''"""Reads key.revoked."""
if topic == "key.revoked":
    header = f"Mesh-Topic: usage.recorded\\r\\n{x}"
path = "usage.recorded.jsonl"
'''
    assert literals(source) == [(2, "key.revoked"), (3, "usage.recorded")]


def test_no_event_name_literal_in_product_code_outside_the_catalogue():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for package in PRODUCT
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in literals(path.read_text())
    ]
    assert not found, "name these events by their class (domain.events.event_name / event_names):\n" + "\n".join(found)
