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


# What a chart's bars can measure: its name, a value in full (a bar's <title>), a value on the axis given the top.
MEASURES = {
    "spend": ("Spend", lambda v: usd_exact(v), lambda v, top: usd(v, 2 if top >= PICO_PER_USD else 4)),
    "requests": ("Requests", tokens, lambda v, top: tokens(v)),
    "tokens": ("Tokens (prompt + completion)", tokens, lambda v, top: tokens(v)),
    "errors": ("Errors", tokens, lambda v, top: tokens(v)),
}


def _buckets(start: date, end: date, unit: str) -> tuple[list[str], list[str]]:
    """Every day (hour) from `start` to `end` inclusive, as a bucket names its bar, and its axis label."""
    if unit == "hour":
        hours = int((end - start).total_seconds() // 3600) + 1
        buckets = [(start + timedelta(hours=i)).isoformat()[: BUCKET_LENGTH["hour"]] for i in range(hours)]
        return buckets, [f"{b[11:13]}:00" for b in buckets]
    span = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return [d.isoformat() for d in span], [f"{d:%Y-%m-%d}" if start.year != end.year else f"{d:%m-%d}" for d in span]


class _Plot:
    """A chart's frame: gridlines at 0, half and the top with their values, and the x position of each bar."""

    bottom, pad_top = 22, 18  # room above the top gridline for its label at 375 px (20-unit text)
    char = 12  # the most an axis character takes, in the chart's units (at 375 px it is drawn about twice as large)

    def __init__(self, width: int, height: int, buckets: list[str], top: int, axis, label: str):
        self.width, self.height, self.top = width, height, top
        values = [top * i // 2 for i in range(3)]
        texts = [axis(value, top) for value in values]
        self.left = max(64, 10 + self.char * max(len(text) for text in texts))  # the longest value fits
        self.plot_w, self.plot_h = width - self.left - 4, height - self.bottom - self.pad_top
        self.step = self.plot_w / max(len(buckets), 1)
        self.bar_w = max(1.0, self.step * 0.7)
        self.out = [
            f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" xmlns="http://www.w3.org/2000/svg" '
            f'aria-label="{escape(label)}, {escape(buckets[0])} to {escape(buckets[-1])}">'
        ]
        for i, (value, text) in enumerate(zip(values, texts)):  # each at its own height: 3 of 7 below the middle
            y = self.pad_top + self.plot_h - (self.plot_h * value / top if top else self.plot_h * i / 2)
            self.out.append(f'<line x1="{self.left}" x2="{width - 4}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
            self.out.append(
                f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{escape(text)}</text>'
            )

    def x(self, i: int) -> float:
        return self.left + i * self.step + (self.step - self.bar_w) / 2

    def height_of(self, value: int) -> float:
        return self.plot_h * value / self.top if self.top else 0.0

    @property
    def base(self) -> float:
        return self.pad_top + self.plot_h

    def labels(self, labels: list[str], every: int) -> None:
        for i, text in enumerate(labels):
            if i % every == 0:
                self.out.append(
                    f'<text x="{self.x(i) + self.bar_w / 2:.1f}" y="{self.height - 6}" text-anchor="middle" '
                    f'class="axis">{text}</text>'
                )


def spend_chart(
    rows: list[tuple[str, str, int]],
    start: date,
    end: date,
    width: int = 720,
    height: int = 200,
    max_series: int = len(PALETTE) - 1,
    unit: str = "day",
    measure: str = "spend",
) -> str:
    """An SVG bar chart of spend (or another of MEASURES) per day (or per hour) stacked by series (model,
    provider or key).

    `rows` are (bucket, series name, value: pico-USD for spend), the bucket the ISO 8601 start of its day or hour
    as a spend history groups it (only its date, or date and hour, is read); every day (hour) from `start` to
    `end` inclusive gets a bar (empty ones stay visible). The largest
    `max_series` series get their own colour, the rest one "other" (rows may name it, summing some series
    themselves). Every bar segment carries a <title> with
    its exact value, and the value itself in `data-value` (with `data-bucket`, `data-series`). The axis names
    days by month and day, with the year when the range spans two.
    """
    name, full, axis = MEASURES[measure]
    buckets, labels = _buckets(start, end, unit)
    totals: dict[str, int] = {}
    for _, series, value in rows:
        totals[series] = totals.get(series, 0) + value
    ranked = sorted((s for s in totals if s != OTHER), key=lambda s: (-totals[s], s))
    folded = OTHER in totals  # rows may sum some series as OTHER themselves
    named = ranked[:max_series] if folded or len(ranked) > max_series + 1 else ranked
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(named)}
    if folded or len(named) < len(ranked):
        colour[OTHER] = PALETTE[-1]
    stacks: dict[str, dict[str, int]] = {b: {} for b in buckets}
    for bucket, series, value in rows:
        stack = stacks.get(bucket[: BUCKET_LENGTH[unit]])
        if stack is not None:
            key = series if series in named else OTHER
            stack[key] = stack.get(key, 0) + value
    top = max((sum(s.values()) for s in stacks.values()), default=0)
    plot = _Plot(width, height, buckets, top, axis, f"{name} per {unit}")
    for i, d in enumerate(buckets):
        y = plot.base
        for series in [*named, OTHER]:
            value = stacks[d].get(series, 0)
            if not value or not top:
                continue
            h = plot.height_of(value)
            y -= h
            plot.out.append(
                f'<rect x="{plot.x(i):.1f}" y="{y:.1f}" width="{plot.bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colour[series]}" data-bucket="{escape(d)}" data-series="{escape(series)}" '
                f'data-value="{value}"><title>{escape(d)} · {escape(series)}: {escape(full(value))}</title></rect>'
            )
    plot.labels(labels, max(1, len(buckets) // (5 if start.year != end.year else 8)))  # longer labels: fewer
    plot.out.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{escape(s)}</li>' for s, c in colour.items()
    )
    return "".join(plot.out) + (f'<ul class="legend">{legend}</ul>' if legend else "")


def latency_chart(
    points: list[tuple[str, int, int, int]],
    start: date,
    end: date,
    width: int = 720,
    height: int = 200,
    unit: str = "day",
) -> str:
    """An SVG chart of the p50 and p95 latency per day (or hour): for each bucket with requests, the p95 bar
    (quiet) with the p50 bar (the accent) over it, narrower: a p50 is never above its p95.

    `points` are (bucket, requests, p50 µs, p95 µs), the bucket as `spend_chart` reads it. Each bar carries a
    <title> in milliseconds; `data-bucket`, `data-requests`, `data-p50-us` and `data-p95-us` on its group.
    """
    buckets, labels = _buckets(start, end, unit)
    found = {bucket[: BUCKET_LENGTH[unit]]: (n, p50, p95) for bucket, n, p50, p95 in points}
    top = max((p95 for bucket, (_, _, p95) in found.items() if bucket in set(buckets)), default=0)
    plot = _Plot(width, height, buckets, top, lambda v, _: milliseconds(v), f"Latency p50 and p95 per {unit}")
    for i, d in enumerate(buckets):
        if d not in found or not top:
            continue
        n, p50, p95 = found[d]
        x, inset = plot.x(i), plot.bar_w / 4
        plot.out.append(
            f'<g class="latency" data-bucket="{escape(d)}" data-requests="{n}" data-p50-us="{p50}" data-p95-us="{p95}">'
        )
        for value, left, w, fill, name in (
            (p95, x, plot.bar_w, PALETTE[1], "p95"),
            (p50, x + inset, plot.bar_w - 2 * inset, PALETTE[0], "p50"),
        ):
            h = plot.height_of(value)
            plot.out.append(
                f'<rect x="{left:.1f}" y="{plot.base - h:.1f}" width="{w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{fill}"><title>{escape(d)} · {name}: {escape(milliseconds(value))} '
                f"({n:,} request{'s' if n != 1 else ''})</title></rect>"
            )
        plot.out.append("</g>")
    plot.labels(labels, max(1, len(buckets) // (5 if start.year != end.year else 8)))
    plot.out.append("</svg>")
    legend = "".join(
        f'<li><span class="swatch" style="background:{c}"></span>{name}</li>'
        for name, c in (("p50", PALETTE[0]), ("p95", PALETTE[1]))
    )
    return "".join(plot.out) + f'<ul class="legend">{legend}</ul>'


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
