"""What text and times a client may hand us: no control characters, bounded lengths, times with a zone.

Every event field is stored in PostgreSQL read models, whose text cannot hold NUL; an event the read models
cannot apply must never be recorded. The aggregates check these rules with `check_text` / `check_aware`; the
API bodies carry the same rules as msgspec constraints (the `Annotated` types below), so the OpenAPI document
shows them and a bad body is refused before anything runs. Money bounds live in domain/money.py.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import msgspec

from domain.money import MAX_USD

# C0 controls and DEL. Single-line text refuses them all; multi-line text allows tab, newline and carriage return.
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_SINGLE_LINE = re.compile(SINGLE_LINE)
_MULTI_LINE = re.compile(MULTI_LINE)
SINGLE_LINE_RULE = "control characters (such as NUL, tab or newline) are not allowed"
MULTI_LINE_RULE = "tab and newlines are the only control characters allowed"

MAX_EMAIL_LENGTH = 254
MAX_LABEL_LENGTH = 100
MAX_REASON_LENGTH = 500
MAX_MODEL_ID_LENGTH = 200
MAX_REFERENCE_LENGTH = 255  # payment references, provider names, Stripe ids
MAX_LIST_LENGTH = 200  # entries of a list such as allowed_models
# Times a client may send: the year as written, whatever the offset, so the rule is one the OpenAPI document can
# state (TIME_PATTERN). Beyond year 9999 a time with a far offset is no valid UTC datetime in Python: PostgreSQL
# stores 9999-12-31T23:59:59-14:00, and reading it back (as UTC, year 10000) would fail every query that loads it.
EARLIEST_YEAR = 1970
LATEST_YEAR = 8999
TIME_PATTERN = r"^(19[7-9][0-9]|[2-8][0-9]{3})-"  # a year from EARLIEST_YEAR to LATEST_YEAR
# A decimal amount of USD as text: digits with at most MAX_USD_DECIMALS decimals, at most MAX_USD (domain/money.py)
AMOUNT_PATTERN = r"^([0-9]{1,6}(\.[0-9]{1,12})?|1000000(\.0{1,12})?)$"
FLOAT_AMOUNT_RULE = 'an amount is a decimal string such as "12.50" or a whole number, not a fractional float'
AMOUNT_RULE = (
    'an amount is at most 1000000 USD: a decimal string such as "12.50" (at most 12 decimals) or a whole number'
)

PATTERN_RULES = {
    SINGLE_LINE: SINGLE_LINE_RULE,
    MULTI_LINE: MULTI_LINE_RULE,
    AMOUNT_PATTERN: AMOUNT_RULE,
}  # to explain a refused pattern


class InvalidText(ValueError):
    """Text with control characters, or too long; or a time without a zone."""


def check_text(
    value: str, field: str, max_length: int, *, multiline: bool = False, error: type[ValueError] = InvalidText
) -> str:
    """`value` if it has no control characters (multi-line text may hold tab and newlines) and at most
    `max_length` characters; otherwise `error` naming the field and what is allowed."""
    if len(value) > max_length:
        raise error(f"{field} must be at most {max_length} characters, got {len(value)}")
    if not (_MULTI_LINE if multiline else _SINGLE_LINE).match(value):
        allowed = MULTI_LINE_RULE if multiline else SINGLE_LINE_RULE
        raise error(f"{field} contains a control character; {allowed}")
    return value


def check_aware(when: datetime | None, field: str, error: type[ValueError] = InvalidText) -> datetime | None:
    """A time must say its zone (a naive time means different instants on different machines) and be written in a
    year from EARLIEST_YEAR to LATEST_YEAR."""
    if when is None:
        return None
    if when.utcoffset() is None:
        raise error(f"{field} must include a time zone, e.g. 2027-01-01T00:00:00Z")
    if not EARLIEST_YEAR <= when.year <= LATEST_YEAR:
        raise error(f"{field} must be in the years {EARLIEST_YEAR} to {LATEST_YEAR}, got {when.isoformat()}")
    return when


def text(max_length: int, *, min_length: int = 0, multiline: bool = False) -> msgspec.Meta:
    """The msgspec constraint for a text field (same rule as `check_text`)."""
    return msgspec.Meta(min_length=min_length, max_length=max_length, pattern=MULTI_LINE if multiline else SINGLE_LINE)


Email = Annotated[str, text(MAX_EMAIL_LENGTH)]
Label = Annotated[str, text(MAX_LABEL_LENGTH, min_length=1)]
Reason = Annotated[str, text(MAX_REASON_LENGTH, multiline=True)]
ModelId = Annotated[str, text(MAX_MODEL_ID_LENGTH)]
Reference = Annotated[str, text(MAX_REFERENCE_LENGTH)]
ModelIds = Annotated[list[ModelId], msgspec.Meta(min_length=1, max_length=MAX_LIST_LENGTH)]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]  # check_aware checks the year (TIME_PATTERN)
# USD as a decimal string or a whole number; a float is refused (it cannot carry money exactly): FLOAT_AMOUNT_RULE
# (a whole float such as 5.0 counts as the whole number: JSON Schema's "integer" admits it)
AmountIn = (
    Annotated[str, msgspec.Meta(pattern=AMOUNT_PATTERN)]
    | Annotated[int, msgspec.Meta(ge=0, le=MAX_USD)]
    | Annotated[float, msgspec.Meta(ge=0, le=MAX_USD, multiple_of=1)]
)
