"""Prompt template rendering: `{{ name }}` placeholders filled with values, strictly and verbatim.

A placeholder is `{{`, optional spaces, a variable name (letters, digits, `_`, not starting with a digit),
optional spaces, `}}`. Nothing else is allowed between the braces: no expressions, no attribute access,
no filters. A value is inserted as it is, never expanded again, so `{{x}}` inside a value stays text.
`\\{{` writes literal braces. Text is compiled once (split into literals and names); rendering only joins.

What a render produces is bounded (MAX_RENDERED_CHARS), and its size is known before any text is built: the
literals' length plus, per variable, its occurrences times its value's length. A short template that repeats a
variable would otherwise multiply a value the client sent into gigabytes.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Mapping

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPEN, CLOSE, ESCAPED_OPEN = "{{", "}}", "\\{{"
MAX_VARIABLE_NAME = 64
# Characters a render may produce, all messages together: as many as a /v1 request body may hold bytes
# (gateway/asgi.py MAX_BODY), so a template never sends upstream more than a client could have sent itself.
MAX_RENDERED_CHARS = 16 * 1024 * 1024


class InvalidTemplate(ValueError):
    """The template text or settings break a rule; the message says which and what is allowed."""


class TemplateRenderError(ValueError):
    """The variables of a render do not fit the template. `code` and `param` name the problem for clients."""

    code = "template_variables_invalid"

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name

    @property
    def param(self) -> str:
        return f"variables.{self.name}"


class TemplateVariableMissing(TemplateRenderError):
    code = "template_variable_missing"


class TemplateVariableUnknown(TemplateRenderError):
    code = "template_variable_unknown"


class TemplateVariableInvalid(TemplateRenderError):
    code = "template_variable_invalid"


class TemplateTooLarge(TemplateRenderError):
    """The render would produce more than MAX_RENDERED_CHARS characters."""

    code = "template_too_large"

    def __init__(self, size: int, bound: int = MAX_RENDERED_CHARS):
        super().__init__(
            f"the rendered template would hold {size} characters; at most {bound} are allowed "
            f"(all messages together): send shorter variables or use a shorter template",
            "",
        )
        self.size, self.bound = size, bound

    @property
    def param(self) -> str:
        return "variables"


class CompiledText:
    """One text split at its placeholders: literals[0] names[0] literals[1] ... names[-1] literals[-1]."""

    __slots__ = ("literals", "names", "literal_chars")

    def __init__(self, literals: tuple[str, ...], names: tuple[str, ...]):
        self.literals, self.names = literals, names
        self.literal_chars = sum(map(len, literals))

    def render(self, values: Mapping[str, str]) -> str:
        if not self.names:
            return self.literals[0]
        literals = self.literals
        out = [literals[0]]
        for i, name in enumerate(self.names, 1):
            out.append(values[name])
            out.append(literals[i])
        return "".join(out)


def compile_text(text: str) -> CompiledText:
    """Split `text` at its placeholders; raise InvalidTemplate for braces that are not a placeholder."""
    literals: list[str] = []
    names: list[str] = []
    piece: list[str] = []
    at = 0
    while True:
        start = text.find(OPEN, at)
        if start < 0:
            piece.append(text[at:])
            break
        if start > 0 and text[start - 1] == "\\":  # \{{ : literal braces
            piece.append(text[at : start - 1] + OPEN)
            at = start + len(OPEN)
            continue
        piece.append(text[at:start])
        end = text.find(CLOSE, start + len(OPEN))
        if end < 0:
            raise InvalidTemplate(
                f"'{{{{' at character {start} is not closed by '}}}}'; write \\{{{{ for literal braces"
            )
        inner = text[start + len(OPEN) : end].strip()
        if not VARIABLE_NAME.fullmatch(inner) or len(inner) > MAX_VARIABLE_NAME:
            shown = text[start : end + len(CLOSE)][:80]
            raise InvalidTemplate(
                f"{shown!r} at character {start} is not a variable: write {{{{ name }}}} with a name of letters, "
                f"digits and _ (at most {MAX_VARIABLE_NAME}, not starting with a digit); expressions and "
                f"attributes are not supported; write \\{{{{ for literal braces"
            )
        literals.append("".join(piece))
        piece = []
        names.append(inner)
        at = end + len(CLOSE)
    literals.append("".join(piece))
    return CompiledText(tuple(literals), tuple(names))


class CompiledMessages:
    """A template's messages, compiled; `variables` lists the names they use, in order of first use."""

    __slots__ = ("roles", "texts", "variables", "_used", "_literal_chars", "_occurrences")

    def __init__(self, messages: list[dict[str, str]]):
        self.roles = tuple(m["role"] for m in messages)
        self.texts = tuple(compile_text(m["content"]) for m in messages)
        self.variables = tuple(dict.fromkeys(name for t in self.texts for name in t.names))
        self._used = frozenset(self.variables)
        self._literal_chars = sum(t.literal_chars for t in self.texts)
        self._occurrences = Counter(name for t in self.texts for name in t.names)

    def rendered_size(self, values: Mapping[str, str]) -> int:
        """Characters the messages hold once rendered with `values` (checked by `text_values`), built or not."""
        return self._literal_chars + sum(count * len(values[name]) for name, count in self._occurrences.items())

    def render(self, variables: Mapping[str, Any] | None) -> list[dict[str, str]]:
        """The messages with every placeholder replaced; strict about missing, unknown and non-text values, and
        TemplateTooLarge, before any text is built, for a result over MAX_RENDERED_CHARS."""
        values = text_values(variables or {}, self._used, self.variables)
        size = self.rendered_size(values)
        if size > MAX_RENDERED_CHARS:
            raise TemplateTooLarge(size)
        return [{"role": role, "content": text.render(values)} for role, text in zip(self.roles, self.texts)]


def text_values(variables: Mapping[str, Any], used: frozenset[str], order: tuple[str, ...]) -> dict[str, str]:
    """Check the variables against the names a template uses and turn each value into its text."""
    if len(variables) != len(used) or not used.issubset(variables):
        _refuse_names(variables, used, order)
    values: dict[str, str] = {}
    for name, value in variables.items():
        kind = type(value)
        if kind is str:
            values[name] = value
        elif kind is int or kind is float:  # a bool is not a number here, and type() tells them apart
            values[name] = str(value)
        else:
            raise TemplateVariableInvalid(
                f"variable {name!r} must be a string or a number, got {_json_type(value)}", name
            )
    return values


def _refuse_names(variables: Mapping[str, Any], used: frozenset[str], order: tuple[str, ...]) -> None:
    missing = [n for n in order if n not in variables]
    if missing:
        name = missing[0]
        raise TemplateVariableMissing(
            f"variable {name!r} is missing; this template needs: {', '.join(missing)}"
            if len(missing) > 1
            else f"variable {name!r} is missing",
            name,
        )
    name = str(next(n for n in variables if n not in used))[:80]
    raise TemplateVariableUnknown(
        f"variable {name!r} is not used by this template; it uses: {', '.join(order) or 'no variables'}", name
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
