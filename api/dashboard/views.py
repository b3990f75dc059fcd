"""How the dashboard shows things: money, tokens, times, ids, and the spend chart as SVG.

Pure functions of their arguments (no I/O), so they are unit-tested on their own.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from html import escape

from domain.money import PICO_PER_USD, pico_to_usd

TABLE_DECIMALS = 6  # $12.480000 in tables
HEADLINE_DECIMALS = 2  # $12.48 in headlines, the exact value on hover
CENT = PICO_PER_USD // 100
# One accent (the first) and quiet companions; a chart's legend and table name every series, so colour
# never carries meaning alone.
PALETTE = ("#2f5fd0", "#7a9be6", "#1f8a70", "#9bc9b8", "#b5651d", "#e0b084", "#6b6b6b", "#b0b0b0")
OTHER = "other"
BUCKET_LENGTH = {"day": len("2026-11-30"), "hour": len("2026-11-30T13")}  # what of a bucket names its bar


def usd(pico: int, decimals: int = TABLE_DECIMALS) -> str:
    """`$12.480000`: pico-USD rounded (half-even) to `decimals`; see `usd_exact` for every digit."""
    value = (Decimal(pico) / PICO_PER_USD).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{decimals}f}"


def usd_input(pico: int) -> str:
    """An amount as a form field holds it: every digit it has, at least to the cent (`10.50`, `10.005`), so
    saving a form unchanged never rounds a cap or a threshold."""
    whole, _, frac = pico_to_usd(pico).partition(".")
    return f"{whole}.{frac.rstrip('0').ljust(HEADLINE_DECIMALS, '0')}"


def cents(pico: int) -> str:
    """Money where the exact value is not the point (balances, spend, totals): to the cent, half-even, the exact
    value for a title. An amount that is not zero never reads as zero: `<$0.01`, `>-$0.01`."""
    shown = usd(pico, HEADLINE_DECIMALS)
    if pico and shown.lstrip("-") == usd(0, HEADLINE_DECIMALS):
        smallest = usd(CENT, HEADLINE_DECIMALS)
        return f"<{smallest}" if pico > 0 else f">-{smallest}"
    return shown


def usd_exact(pico: int) -> str:
    """Every digit: `$12.480000000001`."""
    text = pico_to_usd(pico)
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def per_1k(usd_string: str) -> str:
    """A price per 1K tokens as the catalog states it (up to 9 decimals), at least 6 shown."""
    whole, _, frac = usd_string.partition(".")
    return f"${whole}.{frac.rstrip('0').ljust(TABLE_DECIMALS, '0')}"


def tokens(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def percent(part: float) -> str:
    return f"{part * 100:.1f}%"


CAP_NEAR = 0.8  # a cap this much spent shows amber; spent whole, red


def cap_level(used: float | None) -> str:
    """The class of a cap bar: "near" (amber) from CAP_NEAR, "full" (red) when spent whole, else none."""
    if used is None or used < CAP_NEAR:
        return ""
    return "full" if used >= 1 else "near"


def share(spent: int, cap: int | None) -> float | None:
    """How much of a cap is spent, 0..1 (a bar's width); None without a cap."""
    if not cap:
        return None
    return max(0.0, min(1.0, spent / cap))


def shorten(value: str, keep: int = 4) -> str:
    """`mk-6yfW…bR0K`: the start (after any `xx-` prefix) and the end of a long id or secret."""
    head = value.index("-") + 1 if value[:4].count("-") == 1 else 0
    if len(value) <= head + 2 * keep + 1:
        return value
    return f"{value[: head + keep]}…{value[-keep:]}"


def utc(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """ "3 min ago" (or "in 5 min" for a future time)."""
    if moment is None:
        return "—"
    now = now or datetime.now(timezone.utc)
    seconds = (now - moment).total_seconds()
    future, seconds = seconds < 0, abs(seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def clock(moment: datetime | None) -> str:
    return "—" if moment is None else moment.astimezone(timezone.utc).strftime("%H:%M:%S")


def milliseconds(us: int | None) -> str:
    return "—" if us is None else f"{us / 1000:,.1f} ms"


def spend_chart(
    rows: list[tuple[str, str, int]],
    start: date,
    end: date,
    width: int = 720,
    height: int = 200,
    max_series: int = len(PALETTE) - 1,
    unit: str = "day",
) -> str:
    """An SVG bar chart of spend per day (or per hour) stacked by series (model or provider).

    `rows` are (bucket, series name, pico-USD), the bucket the ISO 8601 start of its day or hour as a spend
    history groups it (only its date, or date and hour, is read); every day (hour) from `start` to `end`
    inclusive gets a bar (empty ones stay visible). The largest
    `max_series` series get their own colour, the rest one "other". Every bar segment carries a <title> with
    its exact amount. The axis names days by month and day, with the year when the range spans two.
    """
    if unit == "hour":
        hours = int((end - start).total_seconds() // 3600) + 1
        buckets = [(start + timedelta(hours=i)).isoformat()[: BUCKET_LENGTH["hour"]] for i in range(hours)]
        labels = [f"{b[11:13]}:00" for b in buckets]
    else:
        span = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        buckets = [d.isoformat() for d in span]
        labels = [f"{d:%Y-%m-%d}" if start.year != end.year else f"{d:%m-%d}" for d in span]
    totals: dict[str, int] = {}
    for _, series, pico in rows:
        totals[series] = totals.get(series, 0) + pico
    ranked = sorted(totals, key=lambda s: (-totals[s], s))
    named = ranked[:max_series] if len(ranked) > max_series + 1 else ranked
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(named)}
    if len(named) < len(ranked):
        colour[OTHER] = PALETTE[-1]
    stacks: dict[str, dict[str, int]] = {b: {} for b in buckets}
    for bucket, series, pico in rows:
        stack = stacks.get(bucket[: BUCKET_LENGTH[unit]])
        if stack is not None:
            key = series if series in named else OTHER
            stack[key] = stack.get(key, 0) + pico
    top = max((sum(s.values()) for s in stacks.values()), default=0)
    left, bottom, pad_top = 64, 22, 8
    plot_w, plot_h = width - left - 4, height - bottom - pad_top
    step = plot_w / max(len(buckets), 1)
    bar_w = max(1.0, step * 0.7)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg" '
        f'aria-label="Spend per {unit}, {escape(buckets[0])} to {escape(buckets[-1])}">'
    ]
    for i in range(3):  # gridlines at 0, 1/2, the top
        value = top * i // 2
        y = pad_top + plot_h - plot_h * i / 2
        out.append(f'<line x1="{left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(usd(value, 2 if top >= PICO_PER_USD else 4))}</text>"
        )
    label_every = max(1, len(buckets) // (5 if start.year != end.year else 8))  # longer labels: fewer of them
    for i, d in enumerate(buckets):
        x = left + i * step + (step - bar_w) / 2
        y = pad_top + plot_h
        for series in [*named, OTHER]:
            pico = stacks[d].get(series, 0)
            if not pico or not top:
                continue
            h = plot_h * pico / top
            y -= h
            out.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour[series]}"><title>{escape(d)} · {escape(series)}: '
                f"{escape(usd_exact(pico))}</title></rect>"
            )
        if i % label_every == 0:
            out.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{height - 6}" text-anchor="middle" class="axis">{labels[i]}</text>'
            )
    out.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{escape(s)}</li>' for s, c in colour.items()
    )
    return "".join(out) + (f'<ul class="legend">{legend}</ul>' if legend else "")


def line_diff(old: str, new: str) -> list[tuple[str, str]]:
    """(kind, line) with kind " ", "-" or "+": what changed from one version's text to the next."""
    import difflib

    diff = []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        if line[:1] in (" ", "-", "+"):
            diff.append((line[:1], line[2:]))
    return diff


FILTERS = {
    "usd": usd,
    "usd_exact": usd_exact,
    "cents": cents,
    "usd_input": usd_input,
    "per_1k": per_1k,
    "tokens": tokens,
    "percent": percent,
    "shorten": shorten,
    "utc": utc,
    "ago": ago,
    "clock": clock,
    "ms": milliseconds,
    "cap_level": cap_level,
}
