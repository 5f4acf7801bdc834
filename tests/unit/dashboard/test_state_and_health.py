"""The dashboard's pure parts: URL view state, the health assessment, the shared query cache."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard import health, query
from dashboard.query import Catalog
from dashboard.runtime import Resources
from dashboard.state import View, from_params, to_params
from livedash import config
from livedash.pinot.client import PinotError, QueryService, Result
from livedash.times import parse_time

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def settings() -> config.Settings:
    return config.load(ROOT / "config" / "livedash.yaml", environ={})


@pytest.fixture(scope="module")
def catalog(settings: config.Settings) -> Catalog:
    return Catalog.from_settings(settings.pipeline)


# -- URL state ---------------------------------------------------------------------------------------------------


def test_view_round_trips_through_the_url(catalog: Catalog) -> None:
    view = View(page="events", range="abs", start_ms=1_800_000_000_000, end_ms=1_800_003_600_000,
                filters=(("country", "DE"), ("type", "click")), refresh_s=10, events_page=3)  # fmt: skip
    params = to_params(view)
    assert params["f"] == ["country:DE", "type:click"]
    assert params["from"] == "2027-01-15T08:00:00Z"
    assert from_params(params, catalog) == view


def test_hostile_or_stale_urls_degrade_to_defaults(catalog: Catalog) -> None:
    view = from_params(
        {"page": "admin", "range": "7d", "refresh": "0.5", "p": "99999999999",
         "f": ["user_id:u1", "country:DE\x00", "nosuchdim:x", "device", "os:", "page:/p/1:extra", "type:click"]},
        catalog,
    )  # fmt: skip
    assert (view.page, view.range, view.refresh_s, view.events_page) == ("overview", "15m", 5, 0)
    assert view.filters == (("page", "/p/1:extra"), ("type", "click"))  # values may contain ':'


def test_refresh_has_a_floor_and_off_stays_off(catalog: Catalog) -> None:
    assert from_params({"refresh": "1"}, catalog, refresh_floor_s=5).refresh_s == 5
    assert from_params({"refresh": "0"}, catalog, refresh_floor_s=5).refresh_s == 0
    assert from_params({"refresh": "7"}, catalog).refresh_s == View().refresh_s  # not a choice


def test_absolute_ranges_need_from_before_to(catalog: Catalog) -> None:
    assert (
        from_params({"range": "abs", "from": "2026-11-28T11:00:00Z", "to": "2026-11-28T10:00:00Z"}, catalog).range
        == "15m"
    )
    ok = from_params({"range": "abs", "from": "2026-11-28T10:00:00", "to": "1795874400000"}, catalog)
    assert ok.range == "abs" and ok.window(0) == (parse_time("2026-11-28T10:00:00Z"), 1_795_874_400_000)


def test_drilling_adds_and_removes_filters_and_resets_paging() -> None:
    view = View(events_page=4).with_filter("country", "DE").with_filter("type", "click").with_filter("country", "FR")
    assert view.filters == (("country", "FR"), ("type", "click")) and view.events_page == 0
    assert view.without_filter("country").filters == (("type", "click"),)


# -- health ------------------------------------------------------------------------------------------------------

METRICS = """# TYPE livedash_events_in_total counter
livedash_events_in_total{partition="0"} 1000.0
livedash_events_in_total{partition="1"} 500.0
livedash_events_in_created{partition="0"} 1.7e9
livedash_events_dead_lettered_total{partition="0"} 10.0
livedash_events_late_total{partition="1"} 4.0
livedash_consumer_lag_events{partition="0"} 30.0
livedash_consumer_lag_events{partition="1"} 12.0
livedash_watermark_delay_seconds{partition="0"} 0.5
livedash_watermark_delay_seconds{partition="1"} 2.5
"""


def test_metrics_are_summed_over_partitions() -> None:
    s = health.parse(METRICS, at=100.0)
    assert (s.events_in, s.dead_lettered, s.late, s.lag_events, s.watermark_delay_s) == (1500, 10, 4, 42, 2.5)


def test_lag_is_unknown_until_a_partition_reports_it() -> None:
    """Just started, no partition has read or resumed yet: the lag is unknown, not zero."""
    started = "\n".join(line for line in METRICS.splitlines() if "consumer_lag" not in line)
    assert health.parse(started, at=100.0).lag_events is None


def test_health_is_ok_when_fresh_and_rates_come_from_two_scrapes() -> None:
    prev = health.Sample(100.0, True, events_in=1000, dead_lettered=5, late=1)
    cur = health.Sample(102.0, True, events_in=3000, dead_lettered=9, late=3, lag_events=20, watermark_delay_s=0.4)
    h = health.assess(prev, cur, newest_event_s=101.5, now=102.0, threshold_s=30)
    assert (h.level, h.in_rate, h.dead_rate, h.late_rate, h.reason) == ("ok", 1000.0, 2.0, 1.0, "")
    assert h.staleness_s == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("cur", "newest", "reason"),
    [
        (health.Sample(200.0, False, error="ConnectionError"), 100.0, "dataflow stopped"),
        (health.Sample(200.0, True, events_in=2000, lag_events=50_000, watermark_delay_s=90), 110.0, "dataflow behind"),
        (health.Sample(200.0, True, events_in=1000, lag_events=0, watermark_delay_s=90), 110.0, "no events arriving"),
        (health.Sample(200.0, True, events_in=9000, lag_events=3, watermark_delay_s=0.5), 110.0, "Pinot behind"),
        (health.Sample(200.0, True, events_in=9000), None, "no aggregates"),
    ],
)
def test_stale_data_turns_red_with_the_likely_reason(cur: health.Sample, newest: float | None, reason: str) -> None:
    prev = health.Sample(190.0, True, events_in=1000)
    h = health.assess(prev, cur, newest_event_s=newest, now=200.0, threshold_s=30)
    assert h.level == "red" and h.reason.startswith(reason), h.reason


def _strip(res: "Resources") -> None:  # noqa: UP037 (a string: the script below has no imports of this module)
    """The health strip alone, as a Streamlit script (AppTest.from_function runs this function's source)."""
    from dashboard import app

    app.health_strip(res, app.View())


def strip_errors(res: Resources) -> list[str]:
    """The strip's red text up to its figures ("newest data ...")."""
    at = AppTest.from_function(_strip, args=(res,), default_timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return [e.value.split("newest data")[0] for e in at.error]


STOPPED = "dataflow stopped: its metrics endpoint does not answer (ConnectionError)"


@pytest.mark.parametrize(
    ("dataflow_up", "answered_before", "says"),
    [
        (True, False, "Data is stale: Pinot could not be reached: Pinot is unreachable. "),
        (True, True, "Data is stale: Pinot could not be reached: Pinot is unreachable. "),  # the last good answer
        (False, False, f"Data is stale: {STOPPED}; Pinot could not be reached: Pinot is unreachable. "),
    ],
)
def test_the_strip_says_pinot_could_not_be_reached_not_that_it_is_empty(
    settings: config.Settings,
    catalog: Catalog,
    monkeypatch: pytest.MonkeyPatch,
    dataflow_up: bool,
    answered_before: bool,
    says: str,
) -> None:
    pinot = Flaky()
    res = Resources(settings, catalog, QueryService(pinot), "-")
    if answered_before:
        res.service.query(query.freshest(catalog), ttl_s=0)
    pinot.down = True
    sample = health.Sample(
        0.0, dataflow_up, events_in=1000, lag_events=0, error="" if dataflow_up else "ConnectionError"
    )
    monkeypatch.setattr(health, "scrape", lambda url, at: replace(sample, at=at))
    assert strip_errors(res) == [says]


def test_the_strip_still_says_when_pinot_has_no_aggregates(
    settings: config.Settings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = Result(("max",), ((0,),), fetched_at=0.0, freshness_ms=None, time_used_ms=1, partial=False)
    res = Resources(settings, catalog, QueryService(lambda sql: empty), "-")
    monkeypatch.setattr(health, "scrape", lambda url, at: health.Sample(at, True, events_in=1000, lag_events=0))
    assert strip_errors(res) == ["Data is stale: no aggregates in Pinot yet. "]


# -- shared cache ------------------------------------------------------------------------------------------------


def result(value: int) -> Result:
    return Result(("n",), ((value,),), fetched_at=0.0, freshness_ms=None, time_used_ms=1, partial=False)


class Flaky:
    """Answers with increasing numbers, or raises while `down`."""

    def __init__(self) -> None:
        self.calls = 0
        self.down = False

    def __call__(self, sql: str) -> Result:
        self.calls += 1
        if self.down:
            raise PinotError("Pinot is unreachable")
        return result(self.calls)


def test_results_are_shared_until_their_ttl_then_refetched() -> None:
    now = [0.0]
    pinot = Flaky()
    service = QueryService(pinot, clock=lambda: now[0])
    assert service.query("q", ttl_s=5).rows == ((1,),)
    now[0] = 4.9
    assert service.query("q", ttl_s=5).rows == ((1,),) and pinot.calls == 1  # a second viewer: no query
    assert service.query("q", ttl_s=5, fresh=True).rows == ((2,),)  # "refresh now"
    now[0] = 20.0
    assert service.query("q", ttl_s=5).rows == ((3,),)


def test_a_failing_pinot_gives_the_last_good_rows_marked_stale() -> None:
    now = [0.0]
    pinot = Flaky()
    service = QueryService(pinot, clock=lambda: now[0])
    service.query("q", ttl_s=1)
    pinot.down, now[0] = True, 10.0
    stale = service.query("q", ttl_s=1)
    assert stale.rows == ((1,),) and stale.stale and "unreachable" in stale.error
    with pytest.raises(PinotError):
        service.query("never seen", ttl_s=1)
    pinot.down = False
    assert not service.query("q", ttl_s=1).stale


def test_the_cache_is_bounded() -> None:
    service = QueryService(Flaky(), max_entries=10)
    for i in range(50):
        service.query(f"q{i}", ttl_s=60)
    assert len(service._cache) <= 10 and len(service._last_good) <= 10


def test_live_windows_are_shared_within_a_step() -> None:
    view = View(range="5m")
    a, b = view.window(1_800_000_001_234, 5000), view.window(1_800_000_004_999, 5000)
    assert a == b == (1_800_000_005_000 - 300_000, 1_800_000_005_000)
    assert view.window(1_800_000_005_000, 5000)[1] == 1_800_000_010_000


def test_a_live_panel_falls_back_to_its_rows_from_an_earlier_window() -> None:
    pinot = Flaky()
    service = QueryService(pinot)
    service.query("SELECT 1 WHERE ts >= 1800000000000", ttl_s=1, panel="SELECT 1 WHERE ts >= ?")
    pinot.down = True
    stale = service.query("SELECT 1 WHERE ts >= 1800000005000", ttl_s=1, panel="SELECT 1 WHERE ts >= ?")
    assert stale.stale and stale.rows == ((1,),)
