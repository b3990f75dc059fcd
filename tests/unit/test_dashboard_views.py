"""The dashboard's view helpers: money, tokens, ids, times, ranges, the spend chart (SVG) and version diffs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta, timezone

import pytest

from api.dashboard import time_ranges, views
from domain.money import PICO_PER_USD

SVG = "{http://www.w3.org/2000/svg}"


def test_money_is_rounded_for_tables_and_headlines_and_exact_on_hover():
    pico = 12 * PICO_PER_USD + 480_000_000_001  # $12.480000000001
    assert views.usd(pico) == "$12.480000"
    assert views.usd(pico, 2) == "$12.48"
    assert views.usd_exact(pico) == "$12.480000000001"
    assert views.usd(1_234_567 * PICO_PER_USD) == "$1,234,567.000000"
    assert views.usd(-5 * PICO_PER_USD // 2, 2) == "-$2.50"
    assert views.usd_exact(-1) == "-$0.000000000001"
    assert views.usd(0) == "$0.000000"
    # half-even at the last shown digit: exact money is never rounded up by habit
    assert views.usd(PICO_PER_USD // 200, 2) == "$0.00"  # 0.005 -> 0.00
    assert views.usd(3 * PICO_PER_USD // 200, 2) == "$0.02"  # 0.015 -> 0.02


def test_spend_and_balances_show_cents_and_never_read_zero_when_they_are_not():
    assert views.cents(12 * PICO_PER_USD + 480_000_000_001) == "$12.48"
    assert views.cents(1_234_567 * PICO_PER_USD) == "$1,234,567.00"
    assert views.cents(0) == "$0.00"
    assert views.cents(1) == "<$0.01"  # a picodollar spent is not nothing
    assert views.cents(PICO_PER_USD // 200) == "<$0.01"  # half a cent: half-even gives $0.00
    assert views.cents(-1) == ">-$0.01"
    assert views.cents(PICO_PER_USD // 200 + 1) == "$0.01"
    assert views.cents(-5 * PICO_PER_USD // 2) == "-$2.50"


def test_a_form_field_holds_every_digit_of_an_amount():
    assert views.usd_input(10 * PICO_PER_USD) == "10.00"
    assert views.usd_input(10 * PICO_PER_USD + PICO_PER_USD // 200) == "10.005"  # not rounded to 10.00 or 10.01
    assert views.usd_input(1) == "0.000000000001"


def test_prices_per_1k_show_every_decimal_the_catalog_has():
    assert views.per_1k("0.5") == "$0.500000"
    assert views.per_1k("0.000000125") == "$0.000000125"
    assert views.per_1k("3") == "$3.000000"


def test_tokens_percent_and_cap_share():
    assert views.tokens(1234567) == "1,234,567"
    assert views.tokens(None) == "—"
    assert views.percent(0.0417) == "4.2%"
    assert views.share(5, None) is None and views.share(5, 0) is None
    assert views.share(5, 10) == 0.5 and views.share(50, 10) == 1.0


def test_ids_and_secrets_are_shortened_in_the_middle():
    assert views.shorten("mk-6yfWabcdefghijklmnopbR0K") == "mk-6yfW…bR0K"
    assert views.shorten("pi_1234567890abcdef", 6) == "pi_123…abcdef"
    assert views.shorten("short") == "short"


def test_times_are_relative_with_utc_on_hover():
    now = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
    assert views.ago(now - timedelta(seconds=5), now) == "5 s ago"
    assert views.ago(now - timedelta(minutes=3, seconds=59), now) == "3 min ago"
    assert views.ago(now - timedelta(hours=2), now) == "2 h ago"
    assert views.ago(now + timedelta(days=3), now) == "in 3 d"
    assert views.ago(None) == "—"
    assert (
        views.utc(datetime(2026, 11, 30, 13, 4, 31, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-30 12:04:31 UTC"
    )
    assert views.milliseconds(1500) == "1.5 ms" and views.milliseconds(None) == "—"


def test_spend_ranges_cover_exactly_what_they_name():
    now = datetime(2026, 11, 30, 12, 34, tzinfo=timezone.utc)
    today = datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert time_ranges.spend_window("7d", None, None, now) == ("7d", today - timedelta(days=6), now, "day")
    assert time_ranges.spend_window("30d", None, None, now).first == today - timedelta(days=29)  # 30 bars
    hour = datetime(2026, 11, 30, 12, tzinfo=timezone.utc)
    assert time_ranges.spend_window("24h", None, None, now) == ("24h", hour - timedelta(hours=23), now, "hour")
    assert time_ranges.spend_window("bogus", None, None, now).preset == time_ranges.DEFAULT_RANGE
    assert time_ranges.spend_window(None, "2026-11-01", "2026-11-03", now) == (
        "custom",
        datetime(2026, 11, 1, tzinfo=timezone.utc),
        datetime(2026, 11, 4, tzinfo=timezone.utc),  # the last day is included
        "day",
    )
    assert time_ranges.spend_window(None, "9999-12-31", "9999-12-31", now).last == datetime.max.replace(
        tzinfo=timezone.utc
    )  # the last day there is has an end too


@pytest.mark.parametrize(
    "start, end, said",
    [
        ("2026-11-05", "2026-11-01", "from (2026-11-05) must not be after to (2026-11-01)"),
        ("nope", "2026-11-01", "from and to are days (YYYY-MM-DD), both given"),
        ("2026-11-01", None, "from and to are days (YYYY-MM-DD), both given"),
    ],
)
def test_custom_days_that_make_no_range_are_refused_saying_why(start, end, said):
    with pytest.raises(time_ranges.BadRange, match=re.escape(said)):
        time_ranges.spend_window(None, start, end)


def test_hourly_and_multi_year_charts_name_their_bars_readably():
    hours, _ = _chart(
        [("2026-11-30T05", "m", PICO_PER_USD)], datetime(2026, 11, 30, 0), datetime(2026, 11, 30, 23), unit="hour"
    )
    assert len(hours.findall("{http://www.w3.org/2000/svg}rect")) == 1
    assert [t.text for t in hours.findall("{http://www.w3.org/2000/svg}text")][3] == "00:00"
    years, _ = _chart([], date(2025, 12, 1), date(2026, 1, 31))
    assert "2025-12-01" in [t.text for t in years.findall("{http://www.w3.org/2000/svg}text")]


def _chart(rows, start=date(2026, 11, 1), end=date(2026, 11, 3), **kwargs):
    svg, _, legend = views.spend_chart(rows, start, end, **kwargs).partition("</svg>")
    return ET.fromstring(svg + "</svg>"), legend


def test_the_spend_chart_stacks_each_day_by_series_with_exact_titles():
    rows = [
        ("2026-11-01", "a", 3 * PICO_PER_USD),
        ("2026-11-01", "b", PICO_PER_USD),
        ("2026-11-03", "a", 2 * PICO_PER_USD + 1),
    ]
    root, legend = _chart(rows)
    rects = root.findall(f"{SVG}rect")
    titles = [r.find(f"{SVG}title").text for r in rects]
    assert titles == ["2026-11-01 · a: $3.000000", "2026-11-01 · b: $1.000000", "2026-11-03 · a: $2.000000000001"]
    heights = [float(r.get("height")) for r in rects]
    plot = 200 - views._Plot.bottom - views._Plot.pad_top
    assert abs(heights[0] + heights[1] - plot) < 0.2  # the busiest day fills the plot
    assert abs(heights[0] / heights[1] - 3) < 0.01  # segments in proportion
    a_day1, b_day1 = rects[0], rects[1]
    assert abs(float(b_day1.get("y")) + float(b_day1.get("height")) - float(a_day1.get("y"))) < 0.2  # b on a
    assert rects[0].get("fill") == views.PALETTE[0]  # the largest series gets the accent
    assert ">a</li>" in legend and ">b</li>" in legend
    day_labels = [t.text for t in root.findall(f"{SVG}text") if re.fullmatch(r"\d\d-\d\d", t.text or "")]
    assert day_labels == ["11-01", "11-02", "11-03"]  # an empty day keeps its place


def test_small_series_are_folded_into_other_and_days_outside_are_left_out():
    rows = [("2026-11-01", f"m{i}", (10 - i) * PICO_PER_USD) for i in range(10)]
    rows.append(("2026-10-01", "m0", 999 * PICO_PER_USD))  # before the range
    root, legend = _chart(rows, max_series=3)
    fills = {r.get("fill") for r in root.findall(f"{SVG}rect")}
    assert len(fills) == 4 and views.PALETTE[-1] in fills
    assert legend.count("<li>") == 4 and ">other</li>" in legend
    total = sum(float(r.get("height")) for r in root.findall(f"{SVG}rect"))
    plot = 200 - views._Plot.bottom - views._Plot.pad_top
    assert abs(total - plot) < 0.5  # the out-of-range row did not set the scale


def test_an_empty_chart_is_still_a_valid_svg_with_its_days():
    root, legend = _chart([])
    assert root.findall(f"{SVG}rect") == [] and legend == ""
    assert "2026-11-01" in root.get("aria-label")


def test_series_names_are_escaped():
    root, legend = _chart([("2026-11-01", "<script>", PICO_PER_USD)])
    assert "<script>" not in legend and "&lt;script&gt;" in legend
    assert root.find(f"{SVG}rect/{SVG}title").text.endswith("<script>: $1.000000")


def test_version_diff_marks_removed_and_added_lines():
    assert views.line_diff("[system]\nYou are X.\nsame", "[system]\nYou are Y.\nsame") == [
        (" ", "[system]"),
        ("-", "You are X."),
        ("+", "You are Y."),
        (" ", "same"),
    ]


def test_a_cap_bar_turns_amber_then_red():
    assert [views.cap_level(u) for u in (None, 0.0, 0.79, 0.8, 0.99, 1.0)] == ["", "", "", "near", "near", "full"]
