"""The Billing page's usage, in pieces: the series a chart can draw, the latency chart, what kind of credit each
movement was, and key labels told apart."""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from datetime import date, datetime

from api.dashboard import views
from api.services.usage import _labels
from projections.billing import CREDIT_KINDS, credit_kind

SVG = "{http://www.w3.org/2000/svg}"


def _svg(chart: str) -> ET.Element:
    return ET.fromstring(chart.partition("</svg>")[0] + "</svg>")


def test_a_chart_of_counts_says_what_it_counts_and_keeps_every_value():
    rows = [("2026-11-01", "a", 3), ("2026-11-01", "b", 4), ("2026-11-03", "a", 2)]
    root = _svg(views.spend_chart(rows, date(2026, 11, 1), date(2026, 11, 3), measure="requests"))
    assert root.get("aria-label") == "Requests per day, 2026-11-01 to 2026-11-03"
    rects = root.findall(f"{SVG}rect")
    assert [(r.get("data-bucket"), r.get("data-series"), r.get("data-value")) for r in rects] == [
        ("2026-11-01", "a", "3"),  # the largest series first, at the bottom
        ("2026-11-01", "b", "4"),
        ("2026-11-03", "a", "2"),
    ]
    assert [r.find(f"{SVG}title").text for r in rects][0] == "2026-11-01 · a: 3"
    axis = {t.text: float(t.get("y")) for t in root.findall(f"{SVG}text") if re.fullmatch(r"\d+", t.text or "")}
    assert set(axis) == {"0", "3", "7"}
    plot = 200 - views._Plot.bottom - views._Plot.pad_top
    # each gridline's value at its own height: 3 of 7 is below the middle
    assert abs((axis["0"] - axis["3"]) / (axis["0"] - axis["7"]) - 3 / 7) < 0.01
    assert abs(axis["0"] - axis["7"] - plot) < 0.2


def test_the_latency_chart_draws_p95_with_p50_over_it_and_leaves_empty_hours_empty():
    points = [("2026-11-01T10:00:00Z", 5, 12_000, 80_000), ("2026-11-01T12:00:00Z", 1, 40_000, 40_000)]
    hourly = views.latency_chart(points, datetime(2026, 11, 1, 10), datetime(2026, 11, 1, 13), unit="hour")
    root = _svg(hourly)
    groups = root.findall(f"{SVG}g")
    assert [
        (g.get("data-bucket"), g.get("data-requests"), g.get("data-p50-us"), g.get("data-p95-us")) for g in groups
    ] == [
        ("2026-11-01T10", "5", "12000", "80000"),
        ("2026-11-01T12", "1", "40000", "40000"),
    ]
    p95, p50 = groups[0].findall(f"{SVG}rect")
    assert p95.find(f"{SVG}title").text == "2026-11-01T10 · p95: 80.0 ms (5 requests)"
    assert p50.find(f"{SVG}title").text == "2026-11-01T10 · p50: 12.0 ms (5 requests)"
    assert float(p95.get("height")) > float(p50.get("height")) and float(p50.get("width")) < float(p95.get("width"))
    plot = 200 - views._Plot.bottom - views._Plot.pad_top
    assert abs(float(p95.get("height")) - plot) < 0.2  # the slowest p95 fills the plot
    assert root.get("aria-label") == "Latency p50 and p95 per hour, 2026-11-01T10 to 2026-11-01T13"
    assert "p50</li>" in hourly and "p95</li>" in hourly
    axis = [t for t in root.findall(f"{SVG}text") if t.get("text-anchor") == "end"]
    assert [t.text for t in axis] == ["0.0 ms", "40.0 ms", "80.0 ms"]
    assert all(float(t.get("x")) >= 12 * len(t.text) for t in axis)  # room for them at 375 px, drawn larger


def test_each_credit_says_what_it_was():
    assert credit_kind(10, "welcome", "operator", None) == "operator"
    assert credit_kind(10, "top-up via stripe (pi_1)", "stripe", "stripe") == "card"
    assert credit_kind(10, "top-up via bank_transfer (MESH-1)", "operator", "bank_transfer") == "bank_transfer"
    # an operator's grant that reads like a top-up is a grant: no top-up of the account has that reference
    assert credit_kind(10, "top-up via bank_transfer (MESH-1)", "operator", None) == "operator"
    assert credit_kind(10, "auto-refill (pi_2)", "auto-refill", "stripe") == "auto_refill"
    assert credit_kind(-5, "refund of top-up pi_1", "stripe", None) == "refund"
    assert credit_kind(-5, "dispute dp_1 on top-up pi_1", "stripe", None) == "dispute"
    assert credit_kind(-5, "refund or dispute of top-up pi_1, reported before its payment", "stripe", None) == (
        "taken_back"
    )
    assert credit_kind(10, "from the CLI", "someone", None) == "grant"
    assert {"operator", "card", "bank_transfer", "auto_refill", "refund", "dispute", "taken_back"} <= set(CREDIT_KINDS)


def test_keys_that_share_a_label_are_told_apart():
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    labels = _labels({a: "prod", b: "prod", c: "ci"})
    assert labels[str(c)] == "ci"
    assert labels[str(a)] == f"prod …{str(a)[-4:]}" and labels[str(b)] == f"prod …{str(b)[-4:]}"


def test_rows_that_sum_some_series_as_other_keep_it_last_in_its_colour():
    rows = [("2026-11-01", views.OTHER, 50), ("2026-11-01", "a", 3), ("2026-11-02", "b", 2)]
    chart = views.spend_chart(rows, date(2026, 11, 1), date(2026, 11, 2), measure="tokens")
    rects = _svg(chart).findall(f"{SVG}rect")
    assert [(r.get("data-series"), r.get("fill")) for r in rects] == [
        ("a", views.PALETTE[0]),  # the largest named series has the accent, though "other" is larger
        (views.OTHER, views.PALETTE[-1]),  # stacked last
        ("b", views.PALETTE[1]),
    ]
    assert chart.index(">a</li>") < chart.index(">b</li>") < chart.index(">other</li>")
