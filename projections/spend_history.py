"""Spend over any window of an account's billing read model, grouped by provider, model, key, day or hour, exact
to the request: whole days from `spend_daily`, whole hours from `spend_hourly`, the partial hours at the edges
from `usage_recent` (projections/billing_projection.py keeps them and says how long)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

import msgspec
import psycopg

from projections.billing_projection import ROLLUP_SUMS, TOKENS


SPEND_GROUPS = {
    "provider": "provider",
    "model": "model",
    "key": "key_id",
    "day": "date_trunc('day', time at time zone 'UTC')",
    "hour": "date_trunc('hour', time at time zone 'UTC')",
}
# What ?group_by= takes, as the OpenAPI document states it: names of SPEND_GROUPS, comma-separated
GROUP_BY_PATTERN = r"^\s*({0})?\s*(,\s*({0})?\s*)*$".format("|".join(SPEND_GROUPS))
GROUP_BY_RULE = f"group_by takes a comma-separated list of {', '.join(SPEND_GROUPS)}"


OTHER_KEYS = "other"  # the group of the keys a spend history by key was not asked to tell apart


class SpendRow(msgspec.Struct):
    group: dict[str, str]
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    spend: int  # pico-USD
    cached_prompt_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


# Where spend over a window comes from, coarsest first: whole days, whole hours, then single requests.
_DAY, _HOUR = timedelta(days=1), timedelta(hours=1)
_EARLIEST = datetime(1, 1, 2, tzinfo=timezone.utc)
_LATEST = datetime(9999, 12, 30, tzinfo=timezone.utc)
_ROLLUP_VALUES = ROLLUP_SUMS
_RECENT_VALUES = "1, (status <> 'ok')::int, " + ", ".join(TOKENS) + ", cost"


def _floor(t: datetime, unit: timedelta) -> datetime:
    t = t.astimezone(timezone.utc)
    return t.replace(hour=0 if unit == _DAY else t.hour, minute=0, second=0, microsecond=0)


def _ceil(t: datetime, unit: timedelta) -> datetime:
    floor = _floor(t, unit)
    return floor if floor == t else floor + unit


def _spend_sources(start: datetime | None, end: datetime | None, by_hour: bool) -> list[tuple[str, str, tuple]]:
    """(table, value columns, (from, to, hole from, hole to)) for each source that has a part of
    [start, end): each covers its range less the range of the coarser source before it (the hole)."""
    start, end = start or _EARLIEST, end or _LATEST
    ranges = [
        ("spend_daily", _ROLLUP_VALUES, (_ceil(start, _DAY), _floor(end, _DAY)) if not by_hour else None),
        ("spend_hourly", _ROLLUP_VALUES, (_ceil(start, _HOUR), _floor(end, _HOUR))),
        ("usage_recent", _RECENT_VALUES, (start, end)),
    ]
    sources, hole = [], None
    for table, values, span in ranges:
        if span is None or span[0] >= span[1]:
            continue
        if hole is None or span[0] < hole[0] or span[1] > hole[1]:
            sources.append((table, values, (*span, *(hole or (_LATEST, _LATEST)))))
        hole = span
    return sources


async def spend_history(
    conn: psycopg.AsyncConnection,
    account_id: UUID,
    group_by: list[str],
    start: datetime | None,
    end: datetime | None,
    *,
    keys: list[UUID] | None = None,
) -> list[SpendRow]:
    """Spend over [start, end) grouped by any of provider, model, key, day, hour (UTC), exact to the request:
    whole days from `spend_daily`, whole hours from `spend_hourly`, the partial hours at the edges from
    `usage_recent` (older edges: see projections/billing_projection.py). Grouped by key with `keys` given, the
    other keys are summed into one group, OTHER_KEYS (a chart of a thousand keys draws a few and the rest)."""
    columns = [SPEND_GROUPS[g] for g in group_by]
    head: list = []  # parameters of the select list, before those of the sources
    if keys is not None and "key" in group_by:
        columns[group_by.index("key")] = f"case when key_id = any(%s) then key_id::text else '{OTHER_KEYS}' end"
        head.append(keys)
    select = "".join(f"{c} as g{i}, " for i, c in enumerate(columns))
    group = f"group by {', '.join(f'g{i}' for i in range(len(columns)))} order by 1" if columns else ""
    parts, params = [], []
    for table, values, bounds in _spend_sources(start, end, "hour" in group_by):
        parts.append(f"""select key_id, provider, model, time, {values} from {table}
                         where account_id = %s and time >= %s and time < %s and (time < %s or time >= %s)""")
        params += [account_id, *bounds]
    if not parts:
        return []
    cur = await conn.execute(
        f"""select {select} {", ".join(f"coalesce(sum({c}), 0)" for c in ROLLUP_SUMS.split(", "))}
            from ({" union all ".join(parts)}) as u ({"key_id, provider, model, time, " + ROLLUP_SUMS}) {group}""",
        head + params,
    )
    rows = []
    for r in await cur.fetchall():
        keys = r[: len(columns)]
        requests, errors, prompt, completion, cached, cache_write, reasoning, spend = (
            int(v) for v in r[len(columns) :]
        )
        group_values = {g: (v.isoformat() + "Z" if isinstance(v, datetime) else str(v)) for g, v in zip(group_by, keys)}
        rows.append(SpendRow(group_values, requests, errors, prompt, completion, spend, cached, cache_write, reasoning))
    return [row for row in rows if row.requests]
