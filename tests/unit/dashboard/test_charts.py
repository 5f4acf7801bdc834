"""The dashboard's figures (dashboard/charts.py): what each trace plots is the rows given, the dimension value
rides along for a click, and uirevision follows the view, never the time."""

from __future__ import annotations

from datetime import UTC, datetime

from dashboard import charts
from dashboard.state import View

T0 = 1_800_000_000_000
VIEW = View(range="1h", filters=(("country", "DE"),))
SERIES = [
    (T0, "page_view", 120, 40, 95.0),
    (T0, "click", 30, 20, None),
    (T0 + 10_000, "click", 33.0, 21, None),
    (T0 + 10_000, "page_view", 110, 38, 90.0),
    (T0 + 20_000, "purchase", 2, 2, 300.0),
]


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def test_series_draws_a_line_per_type_from_the_rows() -> None:
    fig = charts.series(SERIES, VIEW)
    assert [t.name for t in fig.data] == ["click", "page_view", "purchase"]  # sorted by type
    click, page_view, purchase = fig.data
    assert list(click.x) == [at(T0), at(T0 + 10_000)] and list(click.y) == [30.0, 33.0]
    assert list(page_view.x) == [at(T0), at(T0 + 10_000)] and list(page_view.y) == [120.0, 110.0]
    assert list(purchase.x) == [at(T0 + 20_000)] and list(purchase.y) == [2.0]
    assert all(t.mode == "lines+markers" and list(t.customdata) == [t.name] * len(t.x) for t in fig.data)
    assert fig.layout.clickmode == "event+select" and fig.layout.height == 320


def test_an_empty_series_is_an_empty_figure_with_its_layout() -> None:
    fig = charts.series((), VIEW)
    assert fig.data == () and fig.layout.uirevision == "series-1h-(('country', 'DE'),)"


def test_uirevision_names_the_view_not_the_data() -> None:
    """A refresh (other rows) keeps the viewer's zoom; another range or filter starts afresh."""
    rev = charts.series(SERIES, VIEW).layout.uirevision
    assert rev == "series-1h-(('country', 'DE'),)" == charts.series(SERIES[:1], VIEW).layout.uirevision
    assert charts.series(SERIES, View(range="15m", filters=VIEW.filters)).layout.uirevision != rev
    assert charts.series(SERIES, VIEW.without_filter("country")).layout.uirevision != rev
    bd = charts.breakdown([("DE", 5)], VIEW, "device").layout.uirevision
    assert bd == "bd-device-(('country', 'DE'),)" == charts.breakdown([("FR", 9)], VIEW, "device").layout.uirevision
    assert charts.breakdown([("DE", 5)], VIEW, "os").layout.uirevision != bd


def test_breakdown_bars_put_the_largest_value_on_top() -> None:
    rows = [("DE", 500, 120, 80.0), ("FR", 300.0, 90, 70.0), ("__other__", 20, 9, 60.0)]
    assert charts.top_values(rows) == ["DE", "FR", "__other__"]
    fig = charts.breakdown(rows, VIEW, "country")
    (bar,) = fig.data
    # Plotly draws the first bar at the bottom: the rows are reversed, so the first row is on top.
    assert list(bar.y) == ["__other__", "FR", "DE"] and list(bar.x) == [20.0, 300.0, 500.0]
    assert list(bar.customdata) == list(bar.y) and bar.orientation == "h"
    assert fig.layout.height == 60 + 24 * 3


def test_an_empty_breakdown_keeps_room_for_one_bar() -> None:
    fig = charts.breakdown((), VIEW, "country")
    assert list(fig.data[0].x) == [] and fig.layout.height == 84 and charts.top_values(()) == []


def test_values_are_shown_as_text() -> None:
    fig = charts.breakdown([(404, 7)], VIEW, "page")
    assert list(fig.data[0].y) == ["404"] and charts.top_values([(404, 7)]) == ["404"]
