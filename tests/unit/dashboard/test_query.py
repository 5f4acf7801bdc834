"""The dashboard's SQL builder: only configured names, every literal escaped, hostile input never changes the
statement's structure. Structure is checked by blanking every string literal (Pinot's quoting: '' inside
'...') and comparing with the statement built from a harmless value."""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard import query
from dashboard.query import Catalog, QueryError
from dashboard.stitch import FINAL_SLACK_MS, LIVE_SLACK_MS, Level, by_level
from livedash import config
from tests.sql_spans import read_spans

ROOT = Path(__file__).resolve().parents[3]
START, END = 1_800_000_000_000, 1_800_000_900_000
LIVE_MS = 75 * 60_000  # retention.live_min
LITERAL = re.compile(r"'(?:[^']|'')*'")

HOSTILE = [
    "' OR 1=1 --",
    "'; DROP TABLE aggregates; --",
    "DE' UNION SELECT user_id FROM events_raw WHERE 'a'='a",
    "/* comment */ DE",
    "DE -- trailing comment",
    "a''b",
    "''",
    "'",
    "\\'; SELECT 1; --",
    'DE" OR "1"="1',
    "SELECT * FROM aggregates",
    "país 東京 🙂 Ω",
    "\u202eRTL override",
    "x" * 256,
    "%_*?",
    "$(rm -rf /)",
]


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_settings(config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline)


def spans(text: str) -> dict[str, list[tuple[int, int]]]:
    """The windows a statement reads, per roll-up (ranges or starts listed alike)."""
    return read_spans(text, config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline)


def skeleton(sql: str) -> str:
    return LITERAL.sub("'?'", sql)


def builders(catalog: Catalog, filters: dict[str, str]) -> list[query.Sql]:
    return [
        query.totals(catalog, START, END, filters),
        query.by_type(catalog, START, END, filters),
        query.breakdown(catalog, "type", START, END, filters),
        query.timeseries(catalog, START, END, filters, 60_000),
        query.raw_events(catalog, START, END, filters, page=2, page_size=50),
    ]


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("dim", ["country", "page", "campaign"])  # two roll-ups and the raw fallback
def test_hostile_values_stay_inside_one_literal(catalog: Catalog, dim: str, value: str) -> None:
    harmless = builders(catalog, {dim: "DE"})
    hostile = builders(catalog, {dim: value})
    for safe, built in zip(harmless, hostile, strict=True):
        assert skeleton(built.text) == skeleton(safe.text), built.text
        assert built.source == safe.source
        escaped = "'" + value.replace("'", "''") + "'"
        assert escaped in built.text  # the whole value, quotes doubled, as one literal
        assert ";" not in LITERAL.sub("", built.text)  # no statement separator outside literals
        if built.stitch is not None:  # the statements reading its pieces too
            assert safe.stitch is not None
            pieces = " ".join(built.stitch.texts(built.stitch.pieces))
            assert skeleton(pieces) == skeleton(" ".join(safe.stitch.texts(safe.stitch.pieces))), pieces
            assert escaped in pieces and ";" not in LITERAL.sub("", pieces)


@pytest.mark.parametrize("value", ["x" * 257, "DE\x00", "DE\n--", "a\rb", "\x1b[31m", "tab\there", "\ud800"])
def test_unusable_values_are_refused(catalog: Catalog, value: str) -> None:
    with pytest.raises(QueryError):
        query.breakdown(catalog, "type", START, END, {"country": value})
    with pytest.raises(QueryError):
        query.literal(value)


@pytest.mark.parametrize(
    "name",
    ["user_id", "event_id", "country; DROP TABLE aggregates", '"country"', "country--", "cоuntry", "COUNTRY",
     "", " country", "ts", "distinct_theta", "1", "*"],
)  # fmt: skip
def test_unknown_column_names_are_refused(catalog: Catalog, name: str) -> None:
    with pytest.raises(QueryError):
        query.breakdown(catalog, name, START, END, {})
    with pytest.raises(QueryError):
        query.totals(catalog, START, END, {name: "x"})
    with pytest.raises(QueryError):
        query.timeseries(catalog, START, END, {}, 60_000, split=name)


def test_non_string_values_are_refused(catalog: Catalog) -> None:
    for value in (1, None, ["DE"], b"DE"):
        with pytest.raises(QueryError):
            query.totals(catalog, START, END, {"country": value})  # type: ignore[dict-item]


def test_identifiers_are_quoted_configured_names(catalog: Catalog) -> None:
    sql = query.breakdown(catalog, "country", START, END, {"type": "click"}).text
    assert '"country"' in sql and "\"type\" = 'click'" in sql
    outside = LITERAL.sub("", sql)
    assert set(re.findall(r'"([^"]*)"', outside)) <= {*catalog.dimensions, "rollup_name", "window_start",
                                                       "event_count", "distinct_theta", "quantile_tdigest"}  # fmt: skip


def test_a_sliding_rollup_is_never_a_source_overlapping_windows_are_never_summed() -> None:
    shipped = config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline
    sliding = {"name": "type_5m_sliding", "dimensions": ["type"], "window": {"size_s": 300, "every_s": 10}}
    pipeline = shipped.model_validate({**shipped.model_dump(by_alias=True), "rollups": [
        *(r.model_dump(by_alias=True) for r in shipped.rollups), sliding]})  # fmt: skip
    assert any(r.window.every_s for r in pipeline.rollups)
    with_sliding = Catalog.from_settings(pipeline)
    assert [r.name for r in with_sliding.rollups] == [r.name for r in Catalog.from_settings(shipped).rollups]


def test_smallest_covering_rollup_is_picked(catalog: Catalog) -> None:
    def pick(dims: set[str], bucket: int | None = None, start: int = START, end: int = END) -> str:
        source = query.choose_source(catalog, dims, bucket, start, end)
        assert source.rollup is not None, source.note
        return source.rollup.name

    # 15 minutes: the recent tier's fine windows; the history tier's 5 and 15 minute windows are too coarse
    assert pick({"type", "country"}) == "geo_10s"
    assert pick({"page", "referrer"}) == "page_1m"
    # type alone over minutes or an hour: every fine roll-up covers it, and type_10s has the fewest rows per
    # second at its caps (the tiles' sketches are merged row by row); type_5m's windows are too coarse.
    hour = START + 3_600_000
    assert pick({"type"}, None, START, hour) == "type_10s"
    assert pick({"type"}, 10_000, START, hour) == "type_10s"
    assert pick({"type"}, 30_000, START, hour) == "type_10s"
    assert pick({"type"}) == pick(set()) == "type_10s"
    assert pick({"type", "page"}, 60_000, START, hour) == "page_1m"
    # Short ranges take the finest windows there are, even when they are long against the range, down to two
    # windows per range; shorter, raw events answer
    assert pick({"page"}, None, START, START + 120_000) == "page_1m"
    assert query.choose_source(catalog, {"page"}, None, START, START + 119_000).is_raw
    assert pick({"campaign"}, None, START, START + 1_800_000) == "campaign_15m"


def test_long_ranges_read_the_history_tier(catalog: Catalog) -> None:
    day = 86_400_000
    now = START + day

    def pick(dims: set[str], start: int, end: int, bucket: int | None = None) -> query.Source:
        return query.choose_source(catalog, dims, bucket, start, end, now)

    def name(dims: set[str], start: int, end: int, bucket: int | None = None) -> str | None:
        src = pick(dims, start, end, bucket)
        return None if src.rollup is None else src.rollup.name

    # The last 24 hours: the recent tier keeps 3, so the history tier answers, with hourly windows derived from
    # its 5- and 15-minute ones (the cascade) where the buckets allow
    src = pick({"type", "country"}, now - day, now)
    assert src.rollup is not None and (src.rollup.name, src.rollup.table) == ("geo_1h", "aggregates_history")
    hist, recent = ("aggregates_history", 720 * 3_600_000), ("aggregates", 3 * 3_600_000)
    live = ("aggregates_live", LIVE_MS)
    # geo_5m is published final only, its open windows read from geo_10s: the live table's
    assert catalog.levels(src.rollup) == (
        Level("geo_1h", 3_600_000, *hist), Level("geo_5m", 300_000, *hist), Level("geo_10s", 10_000, *recent),
        Level("geo_10s", 10_000, *live),
    )  # fmt: skip
    assert name({"page"}, now - day, now, 900_000) == "page_15m"  # 15-minute buckets: hours do not divide them
    assert name({"page"}, now - day, now) == "page_1h"
    # Totals, rates and series per type over a day: the type-only roll-ups (a few rows per window)
    assert name(set(), now - day, now) == "type_1h"
    assert name({"campaign"}, now - day, now) == "campaign_1h"
    assert name({"type"}, now - day, now, 900_000) == "type_5m"
    assert name({"type"}, now - 6 * 3_600_000, now, 300_000) == "type_5m"
    # A week: hours; 30 days: days (and hours where the series' 6-hour buckets need them)
    assert name({"country"}, now - 7 * day, now) == "geo_1h"
    assert name({"country"}, now - 30 * day, now) == "geo_1d"
    assert name({"page"}, now - 30 * day, now) == "page_1d"
    assert name({"type"}, now - 30 * day, now, 6 * 3_600_000) == "type_1h"
    # The last hour: still in the recent tier, with windows small against the range
    assert name({"type", "country"}, now - 3_600_000, now) == "geo_10s"
    # An hour a week ago: only the history tier still holds it
    old = now - 7 * day
    assert name({"type", "country"}, old, old + 3_600_000) == "geo_5m"
    # Beyond every tier's retention: raw events, and the panel says why
    ancient = now - 40 * day
    src = pick({"type", "country"}, ancient, ancient + day)
    assert src.is_raw and "that far back" in src.note
    # A derived roll-up is published once its windows are final: its statement reads the hours published by
    # now (past the allowed lateness and the slack) from it, and the rest from type_5m, which holds the tail
    sql = query.totals(catalog, now - day, now, {}, now_ms=now).text
    assert "FROM aggregates_history" in sql
    published = now - catalog.lateness_ms - FINAL_SLACK_MS
    hour = published - published % 3_600_000
    assert f'("rollup_name" = \'type_1h\' AND (("window_start" >= {now - day} AND "window_start" < {hour})))' in sql
    assert f'("rollup_name" = \'type_5m\' AND (("window_start" >= {hour} AND "window_start" < {now})))' in sql
    # The stitched panel reads type_5m's final windows there, and the rest from type_10s in the live table, which
    # holds the windows of its last hour whole (the recent tier's table is not asked)
    stitch = query.totals(catalog, now - day, now, {}, now_ms=now).stitch
    assert stitch is not None
    history, tail = stitch.texts(stitch.pieces)
    five = published - published % 300_000
    assert "FROM aggregates_history WHERE" in history and "type_10s" not in history
    assert spans(history)["type_5m"] == [(hour, five)]
    assert tail.startswith("SELECT") and "FROM aggregates_live WHERE" in tail
    assert spans(tail) == {"type_10s": [(five, now)]}
    # A pipeline stopped two days ago: its last 5-minute windows are read from type_5m, not from type_10s,
    # which the recent tier dropped after 3 hours; what the live table no longer keeps from the recent tier's
    stopped = now - 2 * day
    complete = {"type_1h": stopped - 3_600_000, "type_5m": stopped - 300_000}
    history, recent, tail = stitch.texts(stitch.pieces, complete)
    kept, live_kept = now - 3 * 3_600_000, now - LIVE_MS + LIVE_SLACK_MS
    assert "FROM aggregates WHERE" in recent and "FROM aggregates_live WHERE" in tail
    live_kept -= live_kept % 10_000
    assert spans(recent) == {"type_10s": [(kept - kept % 300_000, live_kept)]}
    assert spans(tail) == {"type_10s": [(live_kept, now)]}


def test_open_windows_are_read_from_the_live_table(catalog: Catalog) -> None:
    """Every roll-up published while open has its running rows in the live table only, which also holds a copy of
    its final rows for its last hour (PipelineSettings.has_running_rows); the tier's tables hold final windows
    only. A chain ends in its finest roll-up in the live table, which answers the windows it keeps, the tier's
    table what is older or not final; each window is read from one table, and none twice."""
    day, now = 86_400_000, START + 86_400_000
    hist, recent = ("aggregates_history", 720 * 3_600_000), ("aggregates", 3 * 3_600_000)
    live = ("aggregates_live", LIVE_MS)
    (c15,) = [r for r in catalog.rollups if r.name == "campaign_15m"]
    assert catalog.levels(c15) == (Level("campaign_15m", 900_000, *hist), Level("campaign_15m", 900_000, *live))
    assert catalog.levels(c15, "aggregates_history") == (Level("campaign_15m", 900_000, *hist),)
    (c1h,) = [r for r in catalog.rollups if r.name == "campaign_1h"]
    assert catalog.levels(c1h)[-1] == Level("campaign_15m", 900_000, *live)
    (t10,) = [r for r in catalog.rollups if r.name == "type_10s"]
    assert catalog.levels(t10) == (Level("type_10s", 10_000, *recent), Level("type_10s", 10_000, *live))
    edge = now - LIVE_MS + LIVE_SLACK_MS  # what the live table keeps, a minute inside its retention
    edge15 = edge - edge % 900_000
    published = now - catalog.lateness_ms - FINAL_SLACK_MS
    for start, rollup in ((now - day, "campaign_1h"), (now - 6 * 3_600_000, "campaign_15m")):
        stitch = query.totals(catalog, start, now, {"campaign": "spring"}, now_ms=now).stitch
        assert stitch is not None and stitch.levels[0].name == rollup
        history, tail = stitch.texts(stitch.pieces)
        # the hours published are read from campaign_1h, the rest of what the live table keeps there
        stop = max(edge15, published - published % 3_600_000) if rollup == "campaign_1h" else edge15
        assert "FROM aggregates_history WHERE" in history and "FROM aggregates_live WHERE" in tail
        assert max(hi for ranges in spans(history).values() for _, hi in ranges) == stop
        assert spans(tail) == {"campaign_15m": [(stop, now)]}
        # the probe found the history table's finals only up to two hours ago: the history table still answers
        # what the live table no longer keeps, the live table the rest
        history, tail = stitch.texts(stitch.pieces, {"campaign_1h": now - 7_200_000, "campaign_15m": now - 7_200_000})
        kept = now - LIVE_MS - (now - LIVE_MS) % 900_000
        assert max(hi for ranges in spans(history).values() for _, hi in ranges) == kept
        assert spans(tail) == {"campaign_15m": [(kept, now)]}
    # A short view of a recent roll-up: one statement, the live table's; two hours: the recent tier's table for
    # what the live table no longer keeps (up to a minute before its retention ends)
    stitch = query.totals(catalog, now - 900_000, now, {}, now_ms=now).stitch
    assert stitch is not None and [(lv.name, lv.table) for lv in stitch.levels[-2:]] == [
        ("type_10s", "aggregates"), ("type_10s", "aggregates_live")]  # fmt: skip
    (tail,) = stitch.texts(stitch.pieces, {"type_10s": published})
    assert "FROM aggregates_live WHERE" in tail
    stitch = query.totals(catalog, now - 2 * 3_600_000, now, {}, now_ms=now).stitch
    assert stitch is not None
    older, tail = stitch.texts(stitch.pieces, {"type_10s": published})
    edge -= edge % 10_000
    assert "FROM aggregates WHERE" in older and spans(older)["type_10s"][-1][1] == edge
    assert "FROM aggregates_live WHERE" in tail and spans(tail) == {"type_10s": [(edge, now)]}
    # The one statement of a panel (its console link) reads the live table where it keeps the whole range
    for span, rollup, table in ((900_000, "geo_10s", "aggregates_live"), (3_600_000, "geo_10s", "aggregates_live"),
                                (6 * 3_600_000, "geo_5m", "aggregates_history")):  # fmt: skip
        sql = query.breakdown(catalog, "country", now - span, now, {}, now_ms=now)
        assert sql.source.rollup is not None and sql.source.rollup.name == rollup
        assert f" FROM {table} WHERE " in sql.text, (span, sql.text)


@given(lo=st.integers(0, 200), span=st.integers(0, 400), upto=st.lists(st.integers(-10, 500), min_size=2, max_size=2))
def test_levels_split_a_range_into_whole_published_windows(lo: int, span: int, upto: list[int]) -> None:
    """by_level: each piece of the range once, in order, every span of a derived level whole windows of it and
    published, the finest level taking the rest (in minutes: days of 60, hours of 10, and 1-minute windows)."""
    levels = (Level("day", 60), Level("hour", 10), Level("minute", 1))
    complete = {"day": upto[0], "hour": upto[1]}
    spans = by_level(levels, lo, lo + span, complete)
    assert [(a, b) for _, a, b in spans] == [(a, b) for _, a, b in spans if a < b]
    assert all(x[2] == y[1] for x, y in itertools.pairwise(spans))
    if span:
        assert spans[0][1] == lo and spans[-1][2] == lo + span
    else:
        assert spans == []
    for level, a, b in spans:
        if level.name != "minute":
            assert a % level.size_ms == 0 and b % level.size_ms == 0 and b <= complete[level.name]
    # and it takes the coarsest level wherever a whole window of it fits
    if span and upto[0] >= lo + span and lo % 60 == 0 and span % 60 == 0:
        assert spans == [(levels[0], lo, lo + span)]


def test_raw_fallback_says_why(catalog: Catalog) -> None:
    # 15 minutes of campaigns: the only roll-up by campaign has 15-minute windows, too long for the range
    src = query.choose_source(catalog, {"campaign"}, None, START, END)
    assert src.is_raw and "campaign" in src.note and "too long" in src.note
    src = query.choose_source(catalog, {"page", "country"})
    assert src.is_raw and "together" in src.note
    src = query.choose_source(catalog, {"page"}, 10_000)
    assert src.is_raw and "10 s" in src.note
    sql = query.breakdown(catalog, "campaign", START, END, {})
    assert "FROM events_raw" in sql.text and sql.source.note


def test_rollup_windows_are_taken_whole_and_raw_by_event_time(catalog: Catalog) -> None:
    sql = query.totals(catalog, START + 7_000, END, {"country": "DE"}).text
    assert "\"rollup_name\" = 'geo_10s'" in sql and f'"window_start" >= {START}' in sql
    raw = query.totals(catalog, START + 7_000, END, {"campaign": "x"}).text
    assert f'"ts" >= {START + 7_000}' in raw and f'"ts" < {END}' in raw


def test_an_absent_value_filters_raw_events_as_it_filters_rollups(catalog: Catalog) -> None:
    # The valid topic (what events_raw reads) holds "__none__" for an absent dimension, as the roll-ups do.
    sql = query.raw_events(catalog, START, END, {"campaign": "__none__"}).text
    assert "\"campaign\" = '__none__'" in sql


def test_paging_and_buckets_are_validated(catalog: Catalog) -> None:
    with pytest.raises(QueryError):
        query.raw_events(catalog, START, END, {}, page=-1)
    with pytest.raises(QueryError):
        query.raw_events(catalog, START, END, {}, page_size=10_000)
    with pytest.raises(QueryError):
        query.timeseries(catalog, START, END, {}, 1500)
    assert query.bucket_for(0, 300_000) == 10_000
    assert query.bucket_for(0, 86_400_000) == 900_000
    assert "LIMIT 50 OFFSET 100" in query.raw_events(catalog, START, END, {}, page=2, page_size=50).text


def test_raw_totals_build_bounded_sketches_not_exact_sets(catalog: Catalog) -> None:
    """Exact DISTINCTCOUNT and PERCENTILE hold every value per group in Pinot's heap (a day of raw events ran a
    4 GB Pinot out of memory); raw totals build sketches of the roll-ups' size instead."""
    sql = query.totals(catalog, START, END, {"campaign": "x"})
    assert sql.source.is_raw and sql.quantile is not None, sql.text
    p95 = sql.quantile.text
    assert "DISTINCTCOUNTTHETASKETCH(\"user_id\", 'nominalEntries=4096')" in sql.text
    assert 'PERCENTILETDIGEST("latency_ms", 95)' in p95 and '"latency_ms" IS NOT NULL' in p95
    for text in (sql.text, p95):
        assert not re.search(r"DISTINCTCOUNT\(|PERCENTILE\(|DISTINCTCOUNTRAW|PERCENTILEEST", text), text
    rollup = query.totals(catalog, START, END, {"country": "DE"})
    assert rollup.quantile is None and 'PERCENTILETDIGEST("quantile_tdigest", 95)' in rollup.text


def test_only_the_totals_merge_sketches(catalog: Catalog) -> None:
    """Breakdowns and series show events only: unpacking each row's Theta sketch and t-digest cost 90% of
    such a panel's time in Pinot (docs/benchmarks.md), so they ask for events and nothing else."""
    for cat in (catalog, replace(catalog, rollups=())):
        shown = [query.by_type(cat, START, END, {}), query.breakdown(cat, "country", START, END, {"type": "click"}),
                 query.breakdown(cat, "campaign", START, END, {}), query.timeseries(cat, START, END, {}, 60_000),
                 query.timeseries(cat, START, END, {"campaign": "x"}, 10_000)]  # fmt: skip
        for sql in shown:
            assert sql.quantile is None and not re.search("DISTINCT|PERCENTILE|theta|tdigest", sql.text), sql.text
            assert ("COUNT(*)" if sql.source.is_raw else 'SUM("event_count")') in sql.text
        assert re.search("DISTINCTCOUNTTHETASKETCH", query.totals(cat, START, END, {}).text)


def test_the_rates_and_the_top_types_are_one_statement(catalog: Catalog) -> None:
    for cat in (catalog, replace(catalog, rollups=())):
        for filters in ({}, {"country": "DE"}):
            rates, top = query.by_type(cat, START, END, filters), query.breakdown(cat, "type", START, END, filters)
            assert rates.text == top.text and rates.key == top.key


def test_raw_p95_reads_only_rows_with_the_field(catalog: Catalog) -> None:
    """Pinot 0.11 reads a missing latency as 0 in an aggregate and refuses FILTER on one: the totals' p95 comes
    from a second statement over the same range and filters."""
    filters = {"campaign": "spring"}
    total = query.totals(catalog, START, END, filters)
    assert total.quantile is not None
    cond = total.text.split(" WHERE ", 1)[1]
    assert total.quantile.text == (
        f'SELECT PERCENTILETDIGEST("latency_ms", 95) FROM events_raw WHERE {cond} AND "latency_ms" IS NOT NULL'
    )
    assert total.quantile.merge([(10, 3)], [(120.5,)]) == ((10, 3, 120.5),)
    assert total.quantile.merge([(0, 0)], []) == ((0, 0, None),)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_stay_inside_the_p95_statement_literals(catalog: Catalog, value: str) -> None:
    safe = query.totals(catalog, START, END, {"campaign": "DE"}).quantile
    built = query.totals(catalog, START, END, {"campaign": value}).quantile
    assert safe is not None and built is not None
    assert skeleton(built.text) == skeleton(safe.text), built.text
    assert ";" not in LITERAL.sub("", built.text)


def test_the_listed_events_carrying_each_metric_come_from_its_null_vector(catalog: Catalog) -> None:
    listing = query.raw_events(catalog, START, END, {"country": "DE"})
    assert listing.carried is not None
    statements = listing.carried.statements(["e2", "it's", "e2"])
    assert set(statements) == set(catalog.metrics)
    amount = statements["amount"]
    assert "\"event_id\" IN ('e2', 'it''s')" in amount and '"amount" IS NOT NULL' in amount
    assert "\"country\" = 'DE'" in amount and f'"ts" >= {START}' in amount
    rows = [{"event_id": "e2", "amount": 0.0, "latency_ms": 5.0}, {"event_id": "e3", "amount": 7.0, "latency_ms": 0.0}]
    assert query.Carried.blank(rows, {"amount": {"e3"}, "latency_ms": {"e2", "e3"}}) == [
        {"event_id": "e2", "amount": None, "latency_ms": 5.0},
        {"event_id": "e3", "amount": 7.0, "latency_ms": 0.0},
    ]


# -- panel identity across time ----------------------------------------------------------------------------------

EPOCH_MS = re.compile(r"\b\d{13}\b")  # the identity the dashboard derived from the SQL text before Sql.key


def panels(catalog: Catalog, start: int, end: int, filters: dict[str, str]) -> list[query.Sql]:
    """What the dashboard asks for one view over [start, end), at `end`."""
    bucket = query.bucket_for(start, end)
    return [
        query.totals(catalog, start, end, filters, end),
        query.by_type(catalog, start, end, filters, end),
        query.timeseries(catalog, start, end, filters, bucket, now_ms=end),
        *(query.breakdown(catalog, d, start, end, filters, limit=10, now_ms=end) for d in catalog.dimensions),
        query.raw_events(catalog, start, end, filters, page=0, page_size=50),
        query.raw_events(catalog, start, end, filters, page=1, page_size=50),
    ]


def test_a_panel_keeps_its_key_across_time_and_only_the_same_statement_shares_it(catalog: Catalog) -> None:
    """Sql.key names the panel across time (the last good rows to show while Pinot is down): two statements
    share a key exactly when they differ in their time range only (their text with every epoch-ms time
    blanked is the same), over ranges of every preset, steps of a live range, the previous period, filters
    that move a panel to another roll-up or to raw events, and pages."""
    sqls: list[query.Sql] = []
    for cat in (catalog, replace(catalog, rollups=())):  # with roll-ups, and raw events only
        for span in (300_000, 900_000, 3_600_000, 86_400_000):
            for end in (END, END + 5_000, END - span):  # a later step, the previous period
                for filters in ({}, {"country": "DE"}, {"country": "FR"}, {"campaign": "x"},
                                {"country": "DE", "device": "mobile"}):  # fmt: skip
                    sqls += panels(cat, end - span, end, filters)
    by_key: dict[str, set[str]] = {}
    by_text: dict[str, set[str]] = {}
    for sql in sqls:
        by_key.setdefault(sql.key, set()).add(EPOCH_MS.sub("?", sql.text))
        by_text.setdefault(EPOCH_MS.sub("?", sql.text), set()).add(sql.key)
    assert all(len(texts) == 1 for texts in by_key.values())  # one key: one statement but for its times
    assert all(len(keys) == 1 for keys in by_text.values())  # one statement: one key
    assert len(by_key) > 100  # the ranges, filters and pages made many panels
    live = [query.totals(catalog, END + step - 900_000, END + step, {}, END + step) for step in (0, 1_000, 5_000)]
    assert len({s.key for s in live}) == 1 and len({s.text for s in live}) == 3


def test_a_p95_statement_is_keyed_by_its_panel(catalog: Catalog) -> None:
    raw = replace(catalog, rollups=())
    statements: list[tuple[str, str]] = []
    for end in (END, END + 5_000, END - 900_000):
        for filters in ({}, {"type": "click"}, {"country": "DE"}):
            for sql in panels(raw, end - 900_000, end, filters):
                if sql.quantile is not None:
                    statements.append((sql.quantile.key(sql.key), EPOCH_MS.sub("?", sql.quantile.text)))
    keys = {k for k, _ in statements}
    assert len(keys) == len({s for _, s in statements}) == len(set(statements)) == 3  # key and statement pair up
    assert not keys & {s.key for s in panels(raw, END - 900_000, END, {"type": "click"})}
