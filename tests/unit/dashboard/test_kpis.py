"""The KPI tiles' arithmetic (dashboard/kpis.py) on given numbers: rates over the period, ratios of types, the
change against the previous period, "n/a" where a query failed or there is nothing to divide by."""

from __future__ import annotations

import math

import pytest

from dashboard import kpis
from dashboard.kpis import Period, Tile

CONV, CTR = ("purchase", "page_view"), ("click", "page_view")
NOW = Period(totals=[(9000, 1234.0, 87.25)], types=[("page_view", 4000), ("click", 1000), ("purchase", 50)])
BEFORE = Period(totals=[(6000, 1000, 100.0)], types=[("page_view", 5000), ("click", 1500.0), ("purchase", 25)])


def tiles(now: Period, before: Period, seconds: float = 900.0) -> list[Tile]:
    return kpis.tiles(now, before, seconds, CONV, CTR, "latency_ms")


def test_tiles_compare_each_figure_with_the_previous_period() -> None:
    assert tiles(NOW, BEFORE) == [
        Tile("Events / s", "10.0", "+50.0% vs previous"),  # 9000 / 900 s against 6000 / 900 s
        Tile("Unique users", "1,234", "+23.4% vs previous"),
        Tile("Conversion (purchase / page_view)", "1.25%", "+150.0% vs previous"),  # 50/4000 against 25/5000
        Tile("Click-through (click / page_view)", "25.00%", "-16.7% vs previous"),  # 1000/4000 against 1500/5000
        Tile("p95 latency_ms", "87.2", "-12.8% vs previous"),
    ]


def test_a_failed_query_shows_na_and_no_change() -> None:
    failed = Period(None, None)
    assert [(t.value, t.delta) for t in tiles(failed, BEFORE)] == [("n/a", None)] * 5
    assert [t.delta for t in tiles(NOW, failed)] == [None] * 5
    assert [t.value for t in tiles(NOW, failed)] == ["10.0", "1,234", "1.25%", "25.00%", "87.2"]


def test_no_events_is_a_rate_of_zero_not_unknown() -> None:
    empty = Period(totals=[], types=[])
    assert [t.value for t in tiles(empty, BEFORE)] == ["0.0", "n/a", "n/a", "n/a", "n/a"]
    assert tiles(empty, BEFORE)[0].delta == "-100.0% vs previous"
    assert tiles(NOW, empty)[0].delta is None  # against 0: no change to show


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([(10, 5, 2.5)], (10.0, 5.0, 2.5)),
        ([(0, None, math.nan)], (0.0, None, None)),  # null and NaN: no data
        ([], (None, None, None)),
        (None, (None, None, None)),
    ],
)
def test_totals_read_the_one_row(rows: kpis.Rows | None, expected: tuple[float | None, ...]) -> None:
    assert tuple(kpis.total(rows, i) for i in range(3)) == expected


def test_ratios_need_the_denominator_type() -> None:
    assert kpis.ratio([("page_view", 200), ("purchase", 3)], CONV) == 0.015
    assert kpis.ratio([("page_view", 200)], CONV) == 0.0  # no purchases: 0 %
    assert kpis.ratio([("purchase", 3)], CONV) is None  # no page views: nothing to divide by
    assert kpis.ratio([("page_view", 0), ("purchase", 3)], CONV) is None
    assert kpis.ratio(None, CONV) is None


def test_rate_and_change_arithmetic() -> None:
    assert kpis.rate([(300, 1, 1)], 60.0) == 5.0
    assert kpis.rate([(None, 1, 1)], 60.0) == 0.0
    assert kpis.rate(None, 60.0) is None
    assert kpis.change(12.0, 8.0) == "+50.0% vs previous"
    assert kpis.change(6.0, 8.0) == "-25.0% vs previous"
    assert kpis.change(8.0, 8.0) == "+0.0% vs previous"
    assert kpis.change(None, 8.0) is None and kpis.change(5.0, None) is None and kpis.change(5.0, 0.0) is None
    assert kpis.change(0.0, 8.0) == "-100.0% vs previous"
