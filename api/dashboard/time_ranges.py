"""The dashboard's time ranges: one table of named spans, the presets each page offers, and one reading of a day.

The Logs page and the Billing page both offer pills ("24h", "7d", ...) and custom days (YYYY-MM-DD, as the browser's
date input sends them); the spans and the reading of a day live here, each page picks its presets.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone

RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
    "90d": timedelta(days=90),
}
LOG_PRESETS = ("1h", "24h", "7d", "30d")  # the Logs page's pills
LOG_DEFAULT = "24h"
SPEND_PRESETS = ("24h", "7d", "30d", "90d")  # the Billing page's: a bar per day
DEFAULT_RANGE = "30d"  # the Billing page's


def day_start(value: str) -> datetime:
    """Midnight UTC at the start of the day `value` (YYYY-MM-DD); ValueError for anything else."""
    return datetime.combine(date.fromisoformat(value), time.min, timezone.utc)


def spend_window(
    preset: str | None, start: str | None, end: str | None, now: datetime | None = None
) -> tuple[str, datetime, datetime]:
    """(preset name or "custom", from, to) from the Billing page's query, the last day included; a bad custom range
    falls back to the default."""
    now = now or datetime.now(timezone.utc)
    if start and end:
        try:
            first, last = day_start(start), day_start(end) + timedelta(days=1)
            if first < last:
                return "custom", first, last
        except (ValueError, OverflowError):  # OverflowError: the day after 9999-12-31
            pass
    preset = preset if preset in SPEND_PRESETS else DEFAULT_RANGE
    return preset, now - RANGES[preset], now
