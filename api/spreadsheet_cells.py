"""CSV cells a spreadsheet opens as text: a cell that starts like a formula (`=`, `+`, `-`, `@`, a tab or a
carriage return) gets a leading `'`, so a key label or a requested model such as `=HYPERLINK(...)` is shown, never
run (OWASP's advice on CSV injection). Numbers are written as numbers and never changed."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return "" if value is None else value
