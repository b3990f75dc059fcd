"""What a prompt template may hold: its name, description, messages, default request parameters and labels, their
limits and the checks that keep them (domain/template.py's Template and the API's input rules use them)."""

from __future__ import annotations

import re
import sys
import unicodedata
from typing import Any

from domain.bounds import MAX_MODEL_ID_LENGTH, check_text
from domain.rendering import CompiledMessages, InvalidTemplate

MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 2000
MAX_MESSAGES = 100
MAX_MESSAGE_CHARS = 100_000
MAX_TEMPLATE_CHARS = 256_000  # all messages together
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
MAX_LABELS = 50
ROLES = ("system", "user", "assistant")
LATEST = "latest"  # `name@latest`: the newest version, like `name`
LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
MAX_LABEL_CHARS = 40
# check_label's rule as one pattern (with MAX_LABEL_CHARS as its maximum length), for the OpenAPI document
LABEL_DOCUMENT_PATTERN = r"^(?!latest$)([a-z]|[0-9]+[a-z_.-])[a-z0-9_.-]*$"
LABEL_RULE = (
    f"a label is 1 to {MAX_LABEL_CHARS} characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit, "
    f"not only digits and not 'latest'"
)
REFERENCE_SEPARATOR = "@"
# What a template may set as request defaults, and the checks each one gets.
DEFAULT_FIELDS = ("model", "temperature", "top_p", "max_tokens", "stop")
_RANGES = {"temperature": (0.0, 2.0), "top_p": (0.0, 1.0)}
# control, format (invisible), surrogate, private use, line breaks; unassigned code points are allowed (they are
# no more invisible than any other, and leaving them out keeps NAME_PATTERN a class of about 30 ranges)
_NAME_FORBIDDEN = {"Cc", "Cf", "Cs", "Co", "Zl", "Zp"}


def _forbidden_class() -> str:
    """The characters of _NAME_FORBIDDEN and the reference separator, as a regex class body (ranges of code
    points), so the name's rule can be stated as a pattern in the OpenAPI document."""
    category, at = unicodedata.category, ord(REFERENCE_SEPARATOR)
    # surrogates are left out of the class: no JSON text decodes to one (and regex engines without them refuse it)
    codes = [
        c
        for c in range(sys.maxunicode + 1)
        if c == at or (category(chr(c)) in _NAME_FORBIDDEN and not 0xD800 <= c <= 0xDFFF)
    ]
    # a range starts where a code does not follow the one before it
    starts = [c for i, c in enumerate(codes) if i == 0 or codes[i - 1] != c - 1]
    ends = [c for i, c in enumerate(codes) if i == len(codes) - 1 or codes[i + 1] != c + 1]
    ranges = list(zip(starts, ends))
    return "".join(_escape(a) + ("-" + _escape(b) if b > a else "") for a, b in ranges)


def _escape(code: int) -> str:
    """BMP code points as \\uXXXX (Python's and ECMAScript's regexes alike), others as the character itself (no escape
    for them is common to both)."""
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


# What _forbidden_class works out under the Unicode version of each Python Mesh supports (3.11: 14.0.0, 3.12: 15.0.0,
# 3.13: 15.1.0), so that importing this module does not walk all 1.1 million code points in every process; under
# another version it is worked out. tests/unit/test_template_content.py checks the running Python's entry.
_FORBIDDEN_CLASSES = {
    "14.0.0": (
        "\\u0000-\\u001f\\u0040\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891"
        "\\u08e2\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ue000-\\uf8ff\\ufeff"
        "\\ufff9-\\ufffb\U000110bd\U000110cd\U00013430-\U00013438\U0001bca0-\U0001bca3"
        "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\U000f0000-\U000ffffd\U00100000-\U0010fffd"
    ),
    "15.0.0": (
        "\\u0000-\\u001f\\u0040\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891"
        "\\u08e2\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ue000-\\uf8ff\\ufeff"
        "\\ufff9-\\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
        "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\U000f0000-\U000ffffd\U00100000-\U0010fffd"
    ),
    "15.1.0": (
        "\\u0000-\\u001f\\u0040\\u007f-\\u009f\\u00ad\\u0600-\\u0605\\u061c\\u06dd\\u070f\\u0890-\\u0891"
        "\\u08e2\\u180e\\u200b-\\u200f\\u2028-\\u202e\\u2060-\\u2064\\u2066-\\u206f\\ue000-\\uf8ff\\ufeff"
        "\\ufff9-\\ufffb\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
        "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f\U000f0000-\U000ffffd\U00100000-\U0010fffd"
    ),
}

# A name as the document states it: leading white space (stripped), then a character that is neither forbidden nor
# white space, then no forbidden character; check_name is the same rule.
NAME_PATTERN = "^\\s*[^{0}\\s][^{0}]*$".format(
    _FORBIDDEN_CLASSES.get(unicodedata.unidata_version) or _forbidden_class()
)
NAME_RULE = (
    f"a template name is 1 to {MAX_NAME_LENGTH} characters, not only white space, without control or invisible "
    f"characters and without '{REFERENCE_SEPARATOR}'"
)


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidTemplate(f"name must be 1 to {MAX_NAME_LENGTH} characters")
    if REFERENCE_SEPARATOR in name:
        raise InvalidTemplate(
            f"name must not contain '{REFERENCE_SEPARATOR}': it separates name and version "
            f"in 'name@3' or 'name@production'"
        )
    for ch in name:
        if unicodedata.category(ch) in _NAME_FORBIDDEN:
            raise InvalidTemplate(f"name must not contain control or invisible characters (found U+{ord(ch):04X})")
    return name


def check_description(description: str | None) -> str | None:
    if description is not None and len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidTemplate(f"description must be at most {MAX_DESCRIPTION_LENGTH} characters")
    if description is not None:
        check_text(description, "description", MAX_DESCRIPTION_LENGTH, multiline=True, error=InvalidTemplate)
    return description or None


def check_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The messages as stored (role and content only); raises InvalidTemplate, also for bad placeholders."""
    if not messages or len(messages) > MAX_MESSAGES:
        raise InvalidTemplate(f"messages must hold 1 to {MAX_MESSAGES} messages")
    cleaned, total = [], 0
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise InvalidTemplate(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {str(role)[:40]!r}")
        if not isinstance(content, str) or len(content) > MAX_MESSAGE_CHARS:
            raise InvalidTemplate(f"messages[{i}].content must be text of at most {MAX_MESSAGE_CHARS} characters")
        check_text(content, f"messages[{i}].content", MAX_MESSAGE_CHARS, multiline=True, error=InvalidTemplate)
        total += len(content)
        cleaned.append({"role": role, "content": content})
    if total > MAX_TEMPLATE_CHARS:
        raise InvalidTemplate(f"messages must hold at most {MAX_TEMPLATE_CHARS} characters together, got {total}")
    try:
        CompiledMessages(cleaned)
    except InvalidTemplate as exc:
        raise InvalidTemplate(f"messages: {exc}") from None
    return cleaned


def check_defaults(defaults: dict[str, Any] | None) -> dict[str, Any]:
    """Default request parameters; null values are left out."""
    cleaned: dict[str, Any] = {}
    for field, value in (defaults or {}).items():
        if field not in DEFAULT_FIELDS:
            raise InvalidTemplate(
                f"defaults.{str(field)[:40]} is not supported; defaults may set {', '.join(DEFAULT_FIELDS)}"
            )
        if value is None:
            continue
        if field == "model" and not (isinstance(value, str) and value.strip()):
            raise InvalidTemplate("defaults.model must be a model id")
        elif field == "model":
            check_text(value, "defaults.model", MAX_MODEL_ID_LENGTH, error=InvalidTemplate)
        elif field in _RANGES:
            low, high = _RANGES[field]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise InvalidTemplate(f"defaults.{field} must be a number from {low:g} to {high:g}")
        elif field == "max_tokens" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidTemplate("defaults.max_tokens must be a whole number of at least 1")
        elif field == "stop":
            stops = [value] if isinstance(value, str) else value
            if (
                not isinstance(stops, list)
                or not 1 <= len(stops) <= MAX_STOP_SEQUENCES
                or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops)
            ):
                raise InvalidTemplate(
                    f"defaults.stop must be a string or 1 to {MAX_STOP_SEQUENCES} strings of "
                    f"1 to {MAX_STOP_CHARS} characters"
                )
            for stop in stops:
                check_text(stop, "defaults.stop", MAX_STOP_CHARS, multiline=True, error=InvalidTemplate)
        cleaned[field] = value.strip() if field == "model" else value
    return cleaned


def check_label(label: str) -> str:
    if not LABEL_PATTERN.fullmatch(label) or label.isdigit() or label == LATEST:
        raise InvalidTemplate(f"{LABEL_RULE}; got {label[:60]!r}")
    return label


def changed_fields(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two versions' contents, as field names (`defaults.temperature`, ...)."""
    changed = [f for f in ("description", "messages") if before.get(f) != after.get(f)]
    old, new = before.get("defaults") or {}, after.get("defaults") or {}
    changed += [f"defaults.{f}" for f in DEFAULT_FIELDS if old.get(f) != new.get(f)]
    return changed
