"""The template page's forms: what the editor shows, the changes its message buttons make when JavaScript is off (the
same buttons dashboard.js handles in the page), the content a save sends, and what the Test says of blank variables.

Browsers send a textarea's line breaks as CRLF; the text is kept with `\\n` only, as a client of /api would send it.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from api.errors import ApiError
from api.services.prompt_templates import TemplateContent
from domain.template_content import MAX_MESSAGES

# a message button's value: "add", or what to do with the message at a position (from 1)
ACTION = re.compile(r"(add)|(remove|up|down)-([0-9]{1,3})")
# numbers, as typed (longer ones are refused before they are read)
MAX_NUMBER_CHARS = 20


class Editor(msgspec.Struct):
    """The editor's fields as typed: every message row (blank ones too), defaults as text."""

    name: str = ""
    description: str = ""
    messages: list[dict[str, str]] = []
    model: str = ""
    temperature: str = ""
    top_p: str = ""
    max_tokens: str = ""
    stop: str = ""


def blank() -> Editor:
    return Editor(messages=_with_blank_row([{"role": "system", "content": ""}, {"role": "user", "content": ""}]))


def of_version(name: str, version) -> Editor:
    """A saved version in the editor, with a blank row to write the next message in (while there is room)."""
    defaults = version.defaults
    stop = defaults.get("stop") or []
    return Editor(
        name=name,
        description=version.description or "",
        messages=_with_blank_row([dict(m) for m in version.messages]),
        model=defaults.get("model") or "",
        temperature=_number(defaults.get("temperature")),
        top_p=_number(defaults.get("top_p")),
        max_tokens=_number(defaults.get("max_tokens")),
        stop=stop if isinstance(stop, str) else "\n".join(stop),
    )


def read(form) -> Editor:
    """The editor as posted. More rows than a template may hold (and a blank one) come only from a forged form."""
    roles, contents = form.getall("role", []), form.getall("content", [])
    if max(len(roles), len(contents)) > MAX_MESSAGES + 1:
        raise ApiError(400, f"a template holds at most {MAX_MESSAGES} messages", "invalid_request")
    return Editor(
        name=form.get("name", ""),
        description=lf(form.get("description") or ""),
        messages=[{"role": role, "content": lf(content)} for role, content in zip(roles, contents)],
        model=form.get("model") or "",
        temperature=(form.get("temperature") or "").strip(),
        top_p=(form.get("top_p") or "").strip(),
        max_tokens=(form.get("max_tokens") or "").strip(),
        stop=lf(form.get("stop") or ""),
    )


def apply(editor: Editor, action: str) -> Editor:
    """The editor after a message button (add, remove, move up or down), unsaved."""
    match = ACTION.fullmatch(action)
    rows = list(editor.messages)
    if match is None or (match[3] and not 1 <= int(match[3]) <= len(rows)):
        raise ApiError(400, "that button is not one of the editor's; nothing was changed", "invalid_request")
    if match[1]:
        if len(rows) >= MAX_MESSAGES:
            raise ApiError(400, f"a template holds at most {MAX_MESSAGES} messages", "invalid_request")
        rows.append(_next_row(rows))
    else:
        at = int(match[3]) - 1
        if match[2] == "remove":
            del rows[at]
            rows = rows or [{"role": "user", "content": ""}]
        elif match[2] == "up" and at > 0:
            rows[at - 1], rows[at] = rows[at], rows[at - 1]
        elif match[2] == "down" and at < len(rows) - 1:
            rows[at], rows[at + 1] = rows[at + 1], rows[at]
    return msgspec.structs.replace(editor, messages=rows)


def content(editor: Editor) -> TemplateContent:
    """What a save sends: the messages that are not blank, and the defaults that were filled in."""
    messages = [m for m in editor.messages if m["content"].strip()]
    defaults: dict[str, Any] = {}
    if editor.model:
        defaults["model"] = editor.model
    for field, words, kind in (
        ("temperature", "Temperature", float),
        ("top_p", "Top p", float),
        ("max_tokens", "Max tokens", int),
    ):
        raw = getattr(editor, field)
        if raw:
            defaults[field] = _parse(raw, words, kind)
    stops = [s for s in editor.stop.split("\n") if s.strip()]
    if stops:
        defaults["stop"] = stops
    description = editor.description if editor.description.strip() else None
    return TemplateContent(editor.name.strip(), messages, description, defaults)


def blank_variables(names: list[str]) -> str:
    """What the Test says when variables are blank (dashboard.js says the same before asking the server)."""
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
    return (
        f"{listed} is empty: fill it in to test; nothing was sent"
        if len(names) == 1
        else (f"{listed} are empty: fill them in to test; nothing was sent")
    )


def lf(text: str) -> str:
    """Line breaks as `\\n` (a textarea sends CRLF)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse(raw: str, words: str, kind: type) -> float | int:
    try:
        if len(raw) > MAX_NUMBER_CHARS:
            raise ValueError
        return kind(raw)
    except ValueError:
        kind_words = "a number" if kind is float else "a whole number"
        raise ApiError(
            400, f"{words} must be {kind_words}; got {raw[:MAX_NUMBER_CHARS]!r}", "invalid_request"
        ) from None


def _number(value) -> str:
    return "" if value is None else str(value)


def _next_row(rows: list[dict[str, str]]) -> dict[str, str]:
    """A blank message, the user's after any but a user's (then the assistant's)."""
    return {"role": "assistant" if rows and rows[-1]["role"] == "user" else "user", "content": ""}


def _with_blank_row(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return rows + [_next_row(rows)] if len(rows) < MAX_MESSAGES else rows
