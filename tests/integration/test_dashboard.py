"""The dashboard on the live test stack: every page through Streamlit's AppTest with seeded URLs, and the real
thing in headless Chromium (Debian's chromium, driven by Playwright): data shows, a click on a bar drills
down, and screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.query import Catalog, totals
from livedash.config import Settings
from livedash.wait import poll
from tests.conftest import ARTIFACTS, ROOT, TEST_CONFIG, free_port, run_cli
from tests.pinot_query import attempt, query, scalar
from tests.sql_spans import read_spans

APP = str(ROOT / "dashboard" / "app.py")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def live(stack: Settings) -> Settings:
    """The quick start's demo on the test stack: dataflow, dashboard and a burst of live events, waited for until
    the roll-up the overview's tiles read holds every valid event events_raw holds (the roll-ups publish a
    moment after the raw table shows an event; a tile read before then disagrees with its own SQL run later)."""
    result = run_cli("demo", "--count", "8000", "--rate", "4000", timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"dashboard at {stack.dashboard.url}" in result.stdout  # the demo tells users where to look
    sent = re.search(r"events sent in .*: ([\d,]+) valid", result.stdout)
    assert sent, result.stdout
    valid = int(sent.group(1).replace(",", ""))
    catalog = Catalog.from_settings(stack.pipeline)
    now = int(time.time() * 1000)
    rollup = totals(catalog, now - 900_000, now, {}).source.rollup
    assert rollup is not None  # 15 minutes read a roll-up, not raw events
    first = (now - 1_200_000) // rollup.size_ms * rollup.size_ms  # whole windows, from before the demo
    finest = catalog.levels(rollup)[-1]  # the live table: open windows' running rows, and final rows copied
    rolled = (f"SELECT SUM(event_count) FROM {finest.table} WHERE rollup_name = '{finest.name}' "
              f"AND window_start >= {first}")  # fmt: skip
    raw = f"SELECT COUNT(*) FROM {catalog.raw_table} WHERE ts >= {first}"

    def settled() -> tuple[int, int]:
        return int(scalar(stack, rolled) or 0), int(scalar(stack, raw) or 0)

    counts = poll(lambda: attempt(settled), 180, done=lambda c: isinstance(c, tuple) and c[0] == c[1] >= valid)
    assert counts[0] == counts[1] >= valid, (rollup.name, counts, valid)
    return stack


@pytest.fixture
def app(live: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AppTest]]:
    for var in [v for v in os.environ if v.startswith("LIVEDASH_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("LIVEDASH_CONFIG", str(TEST_CONFIG))
    from dashboard.runtime import resources

    resources.clear()  # built from the test config on the first run

    def make(**params: str) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=90)
        for key, value in params.items():
            at.query_params[key] = value
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    yield make
    resources.clear()


def param(at: AppTest, key: str) -> list[str]:
    value = at.query_params[key]
    return list(value) if isinstance(value, list) else [value]


def metric(at: AppTest, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def console_sql(at: AppTest, index: int = 0) -> str:
    links = [re.search(r"\((http://[^)]*/#/query\?query=[^)]*)\)", c.value) for c in at.caption]
    url = [m.group(1) for m in links if m][index]
    return urllib.parse.parse_qs(urllib.parse.urlparse(url.replace("/#/", "/")).query)["query"][0]


def test_overview_shows_live_numbers_that_match_pinot(app: Callable[..., AppTest], live: Settings) -> None:
    at = app(range="15m", refresh="0")
    events_per_s = float(metric(at, "Events / s").replace(",", ""))
    assert events_per_s > 0
    assert float(metric(at, "Unique users").replace(",", "")) > 100
    assert float(metric(at, "p95").replace(",", "")) > 0
    assert "%" in metric(at, "Conversion")
    strip = [s.value for s in at.success] + [e.value for e in at.error]
    assert any("newest data" in text for text in strip), strip  # the health strip is always there
    captions = " ".join(c.value for c in at.caption)
    assert "data as of" in captions and "Open in Pinot console" in captions and "roll-up `" in captions
    # The first panel's console link carries its SQL; run as is, it gives the number on the tile.
    sql = console_sql(at, 0)
    total = query(live, sql)[0][0]
    assert round(float(total) / 900, 1) == pytest.approx(events_per_s, abs=0.11)
    assert len(at.selectbox) >= 7  # a drill-down for every dimension, plus the sidebar pickers


def test_drill_down_filters_every_panel_and_lists_raw_events(app: Callable[..., AppTest]) -> None:
    at = app(range="15m", refresh="0")
    before = float(metric(at, "Events / s").replace(",", ""))
    drill = next(s for s in at.selectbox if s.label == "Drill into country")
    value = drill.options[1]
    drill.set_value(value).run()
    assert param(at, "f") == [f"country:{value}"]
    assert any(b.label == f"country = {value}" for b in at.button)  # the filter shows as a removable chip
    assert not any(s.label == "Drill into country" for s in at.selectbox)  # already filtered
    after = float(metric(at, "Events / s").replace(",", ""))
    assert 0 < after < before
    assert '"country" = \'' + value.replace("'", "''") + "'" in console_sql(at, 0)
    # deepest level: the raw events of that value
    at.query_params["page"] = "events"
    at.run()
    rows = at.dataframe[0].value
    assert len(rows) > 0 and set(rows["country"]) == {value}
    # removing the chip removes the filter
    next(b for b in at.button if b.label == f"country = {value}").click().run()
    assert "f" not in at.query_params


def test_events_page_is_paged_and_newest_first(app: Callable[..., AppTest]) -> None:
    at = app(page="events", range="15m", refresh="0", f="type:click")
    rows = at.dataframe[0].value
    assert len(rows) == 50 and set(rows["type"]) == {"click"}
    assert list(rows["ts"]) == sorted(rows["ts"], reverse=True)
    next(b for b in at.button if b.label == "Older").click().run()
    assert param(at, "p") == ["1"]
    older = at.dataframe[0].value
    assert max(older["ts"]) <= min(rows["ts"])


def test_a_range_too_short_for_the_rollups_reads_raw_events(app: Callable[..., AppTest], live: Settings) -> None:
    since = int(time.time() * 1000) - 600_000
    campaign = scalar(live, f"SELECT campaign FROM events_raw WHERE campaign <> 'null' AND ts >= {since} LIMIT 1")
    at = app(range="15m", refresh="0", f=f"campaign:{campaign}")
    captions = " ".join(c.value for c in at.caption)
    assert "computed from raw events: the roll-ups grouping by campaign have windows (900 s or more) too long" in (
        captions
    )
    assert float(metric(at, "Events / s").replace(",", "")) > 0
    assert float(metric(at, "Unique users").replace(",", "")) > 0


def test_raw_panels_sketches_agree_with_exact_values(live: Settings) -> None:
    """Raw panels build Theta and t-digest sketches (bounded memory) instead of exact sets, and take the p95
    over the events that carry a latency only (clicks carry none: read as 0 they pulled p95 down). On real
    Pinot the figures agree with DISTINCTCOUNT (within the Theta bound) and the exact rank (within 2%)."""
    from dataclasses import replace

    from dashboard.kpis import total
    from dashboard.query import Catalog, totals
    from livedash.verify.recount import distinct_bound

    catalog = replace(Catalog.from_settings(live.pipeline), rollups=())  # every panel from raw events
    end = int(time.time() * 1000)
    start = end - 900_000
    sql = totals(catalog, start, end, {})
    assert sql.source.is_raw and sql.quantile is not None
    count, users = query(live, sql.text)[0]
    (p95,) = query(live, sql.quantile.text)[0]
    where = sql.text.split(" WHERE ", 1)[1]
    exact_count, exact_users = query(live, f"SELECT COUNT(*), DISTINCTCOUNT(user_id) FROM events_raw WHERE {where}")[0]
    assert count == exact_count > 5000
    assert abs(users - exact_users) <= distinct_bound(exact_users, 12), (users, exact_users)
    without = scalar(live, f"SELECT COUNT(*) FROM events_raw WHERE {where} AND latency_ms IS NULL")
    assert without > 1000  # clicks: the rows a p95 over every row would read as 0
    values = sorted(v for (v,) in query(live, f"SELECT latency_ms FROM events_raw WHERE {where} "
                                              f"AND latency_ms IS NOT NULL LIMIT 100000"))  # fmt: skip
    assert len(values) == exact_count - without
    rank = sum(v <= p95 for v in values) / len(values)
    assert abs(rank - 0.95) <= 0.02, (p95, rank, len(values))
    # Per type: clicks have no p95 at all, the others one each
    p95s = {}
    for kind in ("click", "page_view", "api_latency"):
        of_type = totals(catalog, start, end, {"type": kind})
        assert of_type.quantile is not None
        rows = of_type.quantile.merge(query(live, of_type.text), query(live, of_type.quantile.text))
        p95s[kind] = total(rows, 2)  # as the tile reads it: Pinot's NaN over no rows is no value
    assert p95s["click"] is None and all(v is not None and v > 0 for t, v in p95s.items() if t != "click"), p95s


@pytest.mark.parametrize("hours", [0.25, 1])
def test_stitched_panels_equal_their_one_statement(live: Settings, hours: float) -> None:
    """Every stitched panel of the overview (roll-ups, and raw events where no roll-up fits), read in pieces and
    merged as the dashboard reads them, gives the rows of its one statement over the whole range on real Pinot:
    sums and users equal, p95 within t-digest's error; then a refresh one step later reads a fraction of the
    range, with the same figures."""
    from dashboard import query as q
    from dashboard.panels import fetch, published
    from livedash.pinot.client import PinotClient, QueryService, Result

    catalog = q.Catalog.from_settings(live.pipeline)
    client = PinotClient.of(live.pinot)
    now = int(time.time() * 1000)
    end = now - now % 5000 + 5000
    panels = {n: sql for n, sql in q.overview(catalog, end - int(hours * 3_600_000), end, {}, now).items()
              if sql.stitch is not None}  # fmt: skip
    assert {"totals", "totals, previous period", "series", "top country"} <= set(panels)
    read: list[str] = []

    def run(sql: str) -> Result:
        read.append(sql)
        return client.query(sql)

    service = QueryService(run)
    out = fetch(service, panels, ttl_s=5)
    # the probes of how far each table's levels are published final (a campaign's panel reads campaign_15m's
    # final windows in the history table), then each panel's statements as far as they said
    probes = [t for t in read if t.startswith('SELECT "rollup_name", MAX("window_start") FROM ')]
    complete = published(service, [s.stitch for s in panels.values() if s.stitch is not None])  # kept: no reads
    cold = {text for s in panels.values() if s.stitch for text in s.stitch.texts(s.stitch.pieces, complete)}
    assert sorted(t for t in read if t not in probes) == sorted(cold)
    for name, sql in panels.items():
        assert sql.stitch is not None
        first, last = sql.stitch.levels[0], sql.stitch.levels[-1]
        text = sql.text
        if last.table != first.table:  # one statement reads one table: a roll-up's open windows are in the live
            assert last.name == first.name, name  # one, which holds all its windows of the last hour
            text = text.replace(f" FROM {first.table} ", f" FROM {last.table} ")
        got, whole = out[sql.text], client.query(text)
        assert isinstance(got, Result), (name, got)
        if name.startswith("totals"):
            (count, users, p95), (w_count, w_users, w_p95) = got.rows[0], whole.rows[0]
            assert (count, users) == (float(w_count), w_users), name
            if w_p95 == w_p95 and w_count:  # not NaN: some event carried a latency
                assert p95 is not None and abs(p95 - w_p95) <= 0.05 * w_p95, (name, p95, w_p95)
        elif name == "series":
            assert sorted(got.rows) == sorted(tuple(r) for r in whole.rows), name
        else:  # top values: the same events per rank; a value in both, the same events (ties at the cut may
            # bring in another value of the same count)
            mine, theirs = dict(got.rows), {v: float(n) for v, n in whole.rows}
            assert sorted(mine.values()) == sorted(theirs.values()), name
            assert all(mine[v] == theirs[v] for v in mine.keys() & theirs.keys()), name
    totals_sql = panels["totals"]
    read.clear()
    later = {n: sql for n, sql in q.overview(catalog, end + 5000 - int(hours * 3_600_000), end + 5000, {},
                                             now + 5000).items() if sql.stitch is not None}  # fmt: skip
    again = fetch(service, later, ttl_s=5)
    assert isinstance(again[later["totals"].text], Result)
    assert again[later["totals"].text].rows[0][:2] == out[totals_sql.text].rows[0][:2]  # no new events
    spans = [span for t in read for ranges in read_spans(t, live.pipeline).values() for span in ranges]  # raw too
    assert spans and max(b - a for a, b in spans) < hours * 3_600_000 / 2  # the tail and an edge, not the range
    if hours < 1:  # 15 minutes: the campaigns' windows are too long, their panel reads raw events in pieces too
        assert later["top campaign"].source.is_raw and any(" FROM events_raw WHERE " in t for t in read)


def test_open_windows_are_in_the_live_table_only_and_read_from_there(live: Settings) -> None:
    """Running rows go to the live table only: the recent and history tables hold final windows, one version
    each (not one per second or 10 s for hours or 30 days). A campaign panel over hours, which reads
    campaign_15m, stitches its final windows from the history table and the rest from the live table: every
    event of the campaign, counted once."""
    from dashboard import query as q
    from dashboard.panels import fetch
    from livedash.pinot.client import PinotClient, QueryService, Result

    assert live.pipeline.copies_to_live(live.pipeline.rollup("campaign_15m"))
    versions = "SELECT COUNT(*) FROM {} WHERE is_final = 0 OPTION(skipUpsert=true)"
    assert int(scalar(live, versions.format("aggregates_history"))) == 0
    assert int(scalar(live, versions.format("aggregates"))) == 0
    running = "SELECT COUNT(*) FROM aggregates_live WHERE rollup_name = '{}' AND is_final = 0 OPTION(skipUpsert=true)"
    assert all(int(scalar(live, running.format(name))) > 0 for name in ("campaign_15m", "geo_10s", "page_1m"))
    since = int(time.time() * 1000) - 1_200_000
    campaign, n = query(live, f"SELECT campaign, COUNT(*) FROM events_raw WHERE campaign <> '__none__' AND "
                              f"ts >= {since} GROUP BY campaign ORDER BY COUNT(*) DESC LIMIT 1")[0]  # fmt: skip
    catalog = q.Catalog.from_settings(live.pipeline)
    client = PinotClient.of(live.pinot)
    service = QueryService(client.query)

    def stitched() -> tuple[float, int]:
        now = int(time.time() * 1000)
        sql = q.totals(catalog, now - 6 * 3_600_000, now, {"campaign": str(campaign)}, now)
        assert sql.stitch is not None and sql.stitch.levels[0].name == "campaign_15m", sql.text
        got = fetch(service, {"totals": sql}, ttl_s=0, fresh=True)[sql.text]
        assert isinstance(got, Result), got
        first = sql.stitch.pieces[0].lo
        raw = scalar(live, f"SELECT COUNT(*) FROM events_raw WHERE campaign = '{campaign}' AND ts >= {first}")
        return float(got.rows[0][0]), int(raw)

    found = poll(lambda: attempt(stitched), 60, done=lambda c: isinstance(c, tuple) and c[0] == c[1])
    assert isinstance(found, tuple) and found[0] == found[1] >= int(n) > 0, (campaign, found, n)


def test_an_empty_range_shows_no_data_without_failing(app: Callable[..., AppTest]) -> None:
    at = app(range="abs", **{"from": "2001-01-01T00:00:00Z", "to": "2001-01-01T01:00:00Z"}, refresh="0")
    assert metric(at, "Events / s") == "0.0"
    assert metric(at, "Unique users") in ("0", "n/a")


def test_pinot_down_shows_last_good_data_marked_stale(app: Callable[..., AppTest]) -> None:
    from dashboard.runtime import resources
    from livedash.pinot.client import PinotClient

    at = app(range="1h", refresh="0")
    good = metric(at, "Events / s")
    res = resources()
    real = res.service.run
    res.service.run = PinotClient(f"http://127.0.0.1:{free_port()}", timeout_s=1).query  # nothing listens there
    try:
        at.session_state["refresh_now"] = True
        at.run()
        assert not at.exception
        warnings = " ".join(w.value for w in at.warning)
        assert "last good data (stale)" in warnings and "unreachable" in warnings
        assert metric(at, "Events / s") == good
        fresh = app(range="5m", refresh="0", f="device:tablet")  # never asked before: nothing to fall back on
        assert any("No data: Pinot is unreachable" in e.value for e in fresh.error)
    finally:
        res.service.run = real


# -- a real browser ----------------------------------------------------------------------------------------------


def test_real_browser_drill_down(live: Settings) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{live.dashboard.url}/?range=15m&refresh=0", timeout=60_000)
            page.get_by_text("Unique users").first.wait_for(timeout=90_000)
            page.wait_for_selector(".js-plotly-plot .bars path", timeout=90_000)
            wait_drawn(page, timeout_ms=90_000)
            before = events_per_s(page)
            assert before > 0
            page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)
            chart = country_chart(page)
            assert chart is not None, "no country breakdown on the page"
            value = (chart.locator(".ytick text").last.text_content() or "").strip()  # the top bar (the largest value)
            bar = chart.locator(".bars path").last.bounding_box()
            assert bar is not None
            x, y = bar["x"] + 8, bar["y"] + bar["height"] / 2  # the bar's left end: the mode bar covers its right
            page.mouse.move(x - 3, y)
            chart.locator(".hoverlayer .hovertext").filter(has_text=value).first.wait_for(timeout=10_000)  # Plotly
            page.mouse.move(x, y)  # saw the pointer on the bar: the click picks it
            page.mouse.click(x, y)
            # Streamlit rewrites the address with history.replaceState, which Playwright's page.url does not
            # follow: read what the address bar shows.
            address = poll(lambda: str(page.evaluate("location.href")), timeout_s=60, every_s=0.5,
                           done=lambda href: "f=country" in href)  # fmt: skip
            assert f"f=country%3A{urllib.parse.quote(value)}" in address, address
            page.get_by_role("button", name=f"country = {value}").wait_for(timeout=60_000)
            page.wait_for_selector(".js-plotly-plot .bars path", timeout=60_000)
            wait_drawn(page, timeout_ms=60_000)
            after = events_per_s(page)
            assert 0 < after < before  # the panels are filtered
            assert country_chart(page) is None  # a filtered dimension has no breakdown any more
            page.screenshot(path=str(ARTIFACTS / "dashboard-drilldown.png"), full_page=True)
        finally:
            browser.close()


# Streamlit has finished its run (no running icon, no element left over from the run before, marked stale) and
# Plotly has drawn every chart of it: what the test waits for instead of sleeping.
DRAWN = """() => {
    const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
    return charts.length > 0 && charts.every(chart => chart.querySelector('.main-svg') !== null)
        && document.querySelector('[data-testid="stStatusWidgetRunningIcon"]') === null
        && document.querySelector('[data-stale="true"]') === null;
}"""


def wait_drawn(page: Any, timeout_ms: float) -> None:
    page.wait_for_function(DRAWN, timeout=timeout_ms)


def events_per_s(page: Any) -> float:
    tile = page.locator('[data-testid="stMetric"]').filter(has_text="Events / s").first
    text = tile.locator('[data-testid="stMetricValue"]').inner_text()
    return float(text.replace(",", ""))


def country_chart(page: Any) -> Any | None:
    charts = page.locator(".js-plotly-plot")
    for i in range(charts.count()):
        chart = charts.nth(i)
        ticks = [t.strip() for t in chart.locator(".ytick text").all_text_contents()]
        if ticks and all(re.fullmatch(r"[A-Z]{2}|__other__|__none__", t) for t in ticks):
            return chart
    return None
