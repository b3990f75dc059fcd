"""The dashboard's time ranges: one table of named spans, the presets each page offers, and one reading of a day.

The Logs page and the Billing page both offer pills ("24h", "7d", ...) and custom days (YYYY-MM-DD, as the browser's
date input sends them); the spans and the reading of a day live here, each page picks its presets.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import NamedTuple

RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
LOG_PRESETS = ("1h", "24h", "7d", "30d")  # the Logs page's pills
LOG_DEFAULT = "24h"
SPEND_PRESETS = ("24h", "7d", "30d", "90d")  # the Billing page's: a bar per day, or per hour for HOURLY
HOURLY = ("24h",)
DEFAULT_RANGE = "30d"  # the Billing page's


def day_start(value: str) -> datetime:
    """Midnight UTC at the start of the day `value` (YYYY-MM-DD); ValueError for anything else."""
    return datetime.combine(date.fromisoformat(value), time.min, timezone.utc)


def instant(value: str) -> datetime:
    """An instant as the browser's datetime-local input sends it (YYYY-MM-DDTHH:MM, read as UTC), or with a zone;
    ValueError for anything else."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _day_after(day: datetime) -> datetime:
    """The end of `day`: the next midnight, or the last moment there is after 9999-12-31 began."""
    try:
        return day + timedelta(days=1)
    except OverflowError:
        return datetime.max.replace(tzinfo=timezone.utc)


class SpendWindow(NamedTuple):
    preset: str  # a name of SPEND_PRESETS, or "custom"
    first: datetime
    last: datetime  # the window is [first, last)
    unit: str  # "hour" or "day": a bar each


class BadRange(ValueError):
    """Custom dates that make no range; the message says what is allowed."""


def spend_window(preset: str | None, start: str | None, end: str | None, now: datetime | None = None) -> SpendWindow:
    """The Billing page's window. A preset covers exactly what it names in whole bars: "24h" the last 24 hours
    (the current one included), "7d" today and the 6 days before, and so on; custom days run from the start
    of `start` to the end of `end`. Custom days that are not dates, or run backwards, are refused."""
    now = now or datetime.now(timezone.utc)
    if start or end:
        try:
            first, last = day_start(start or ""), _day_after(day_start(end or ""))
        except ValueError:
            raise BadRange(f"from and to are days (YYYY-MM-DD), both given; got {start!r} and {end!r}") from None
        if first >= last:
            raise BadRange(f"from ({start}) must not be after to ({end})")
        return SpendWindow("custom", first, last, "day")
    preset = preset if preset in SPEND_PRESETS else DEFAULT_RANGE
    if preset in HOURLY:
        hour = now.replace(minute=0, second=0, microsecond=0)
        return SpendWindow(preset, hour - RANGES[preset] + timedelta(hours=1), now, "hour")
    today = datetime.combine(now.date(), time.min, timezone.utc)
    return SpendWindow(preset, today - RANGES[preset] + timedelta(days=1), now, "day")
