"""Stitched panels (dashboard/stitch.py, dashboard/panels.py): a range read in pieces gives the rows of the one
statement over it, and a refresh of an open page reads only the pieces that can have changed. Pinot is a
fake here that answers the pieces' statements from a table of rows (the real one: tests/integration)."""

from __future__ import annotations

import base64
import dataclasses
import itertools
import random
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasketches as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard import query
from dashboard.panels import fetch
from dashboard.stitch import (
    FINAL_SLACK_MS,
    LISTED_MAX,
    LIVE_SLACK_MS,
    RAW_BUCKET_MS,
    SETTLED_S,
    Piece,
    piece_size,
    pieces,
    raw_level,
    spans_condition,
    ttl_of,
)
from livedash import config
from livedash.pinot.client import PinotError, QueryService, Result
from livedash.pipeline.aggregates import tdigest_bytes
from tests.sql_spans import read_spans

ROOT = Path(__file__).resolve().parents[3]
WINDOW = 10_000
T0 = 1_800_000_000_000  # a multiple of a day
TYPES = ("page_view", "click", "purchase")
COUNTRIES = ("US", "DE", "IN", "BR", "'; --")
PIPELINE = config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline


@pytest.fixture(scope="module")
def catalog() -> query.Catalog:
    return query.Catalog.from_settings(config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline)


def events(seed: int, start: int, end: int, gap_ms: int = 1400) -> list[tuple[int, str, str, int, float | None]]:
    """(ts, type, country, user, latency) every ~gap/2 (0.7 s) over [start, end)."""
    rng = random.Random(seed)
    out = []
    ts = start
    while ts < end:
        kind = rng.choice(TYPES)
        latency = None if kind == "click" else rng.lognormvariate(4, 0.6)
        out.append((ts, kind, rng.choice(COUNTRIES), rng.randrange(300), latency))
        ts += rng.randrange(1, gap_ms)
    return out


class FakePinot:
    """Answers SELECT <time bucket> AS piece, <columns>, <measures> FROM .. WHERE rollup_name = .. AND
    <filters> AND (<ranges>) GROUP BY .. over 10 s windows of `rows`, as Pinot would: sums, the union of the
    windows' Theta sketches (base64), one t-digest of the group's values (hex); FROM events_raw, over the rows
    as events (COUNT(*), ranges of "ts")."""

    def __init__(self, rows: list[tuple[int, str, str, int, float | None]]) -> None:
        self.rows = rows
        self.statements: list[str] = []
        self.down = False
        self.published: dict[str, int] = {}  # the probe's answer: derived roll-up -> its newest window's start

    def __call__(self, sql: str) -> Result:
        if self.down:
            raise PinotError("Pinot is unreachable at fake: ConnectionError", "ConnectionError")
        if sql.startswith('SELECT "rollup_name", MAX("window_start")'):  # the probe (stitch.probe_text)
            asked = {n: int(t) for n, t in re.findall(r'"rollup_name" = \'(\w+)\' AND "window_start" >= (\d+)', sql)}
            rows = tuple((n, float(t)) for n, t in self.published.items() if n in asked and t >= asked[n])
            return Result(("rollup_name", "max"), rows, 0.0, None, 1, False)
        self.statements.append(sql)
        bucket = int(re.search(r"'(\d+):SECONDS'\) AS piece", sql).group(1)) * 1000  # type: ignore[union-attr]
        selected = re.search(r"AS piece, (.*) FROM", sql).group(1)  # type: ignore[union-attr]
        columns = [c for c in re.findall(r'(?:^|, )"(\w+)"', selected)]
        raw = " FROM events_raw " in sql  # rows are events, timed by "ts"; else 10 s windows
        ranges = [span for spans in read_spans(sql, PIPELINE).values() for span in spans]
        where = sql.split(" WHERE ", 1)[1]
        filters = {k: v.replace("''", "'") for k, v in re.findall(r'"(\w+)" = \'((?:[^\']|\'\')*)\'', where)}
        filters.pop("rollup_name", None)
        groups: dict[tuple[Any, ...], list[tuple[int, str, str, int, float | None]]] = defaultdict(list)
        for row in self.rows:
            ws = row[0] if raw else row[0] - row[0] % WINDOW
            named = {"type": row[1], "country": row[2], "campaign": f"c{row[3] % 5}"}
            if not any(lo <= ws < hi for lo, hi in ranges) or any(named[k] != v for k, v in filters.items()):
                continue
            groups[(ws - ws % bucket, *(named[c] for c in columns))].append(row)
        out = []
        for key, found in groups.items():
            measures: list[Any] = []
            if "SUM(" in selected or "COUNT(*)" in selected:
                measures.append(float(len(found)))
            if "DISTINCTCOUNTRAWTHETASKETCH" in selected:
                sketch = ds.update_theta_sketch(12)
                for r in found:
                    sketch.update(r[3])
                measures.append(base64.b64encode(sketch.compact().serialize()).decode())
            if "PERCENTILERAWTDIGEST" in selected:
                kll = ds.kll_doubles_sketch(200)
                for r in found:
                    if r[4] is not None:
                        kll.update(r[4])
                measures.append(tdigest_bytes(kll).hex())
            out.append((*key, *measures))
        limit = int(re.search(r"LIMIT (\d+)$", sql).group(1))  # type: ignore[union-attr]
        return Result(("piece", *columns, "m"), tuple(out[:limit]), 0.0, None, 1, False)


def expected(rows: Iterable[tuple[int, str, str, int, float | None]], first: int, end: int,
             filters: dict[str, str]) -> list[tuple[int, str, str, int, float | None]]:  # fmt: skip
    return [r for r in rows if first <= r[0] - r[0] % WINDOW < end
            and all({"type": r[1], "country": r[2]}[k] == v for k, v in filters.items())]  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), span_s=st.sampled_from([300, 900, 3600]), offset_s=st.integers(0, 600),
       ago_s=st.integers(0, 2000), country=st.sampled_from(["", "DE", "'; --"]))  # fmt: skip
def test_stitched_rows_are_the_whole_ranges_rows(catalog: query.Catalog, seed: int, span_s: int, offset_s: int,
                                                  ago_s: int, country: str) -> None:  # fmt: skip
    start = T0 + offset_s * 1000 + seed % 7 * 1000  # mid-window starts too
    end = start + span_s * 1000
    now = end + ago_s * 1000
    rows = events(seed, start - 20_000, end + 20_000)
    filters = {"country": country} if country else {}
    pinot = FakePinot(rows)
    bucket = query.bucket_for(start, end)
    panels = {"totals": query.totals(catalog, start, end, filters, now),
              "top": query.breakdown(catalog, "type", start, end, filters, now_ms=now),
              "series": query.timeseries(catalog, start, end, filters, bucket, now_ms=now)}  # fmt: skip
    assert all(sql.stitch is not None and sql.source.rollup is not None for sql in panels.values())
    out = fetch(QueryService(pinot), panels, ttl_s=5)
    first = start - start % WINDOW  # whole windows: the one holding the start
    kept = expected(rows, first, end, filters)

    (count, users, p95) = _rows(out, panels["totals"])[0]
    assert count == len(kept)
    assert users == len({r[3] for r in kept})  # under 4,096 users: Theta is exact
    latencies = sorted(r[4] for r in kept if r[4] is not None)
    if latencies:
        assert p95 is not None and abs(sum(v <= p95 for v in latencies) / len(latencies) - 0.95) <= 0.03
    else:
        assert p95 is None
    by_type: dict[str, int] = defaultdict(int)
    for r in kept:
        by_type[r[1]] += 1
    assert dict(_rows(out, panels["top"])) == by_type
    assert [c for _, c in _rows(out, panels["top"])] == sorted(by_type.values(), reverse=True)
    series: dict[tuple[int, str], int] = defaultdict(int)
    for r in kept:
        ws = r[0] - r[0] % WINDOW
        series[(ws - ws % bucket, r[1])] += 1
    got = _rows(out, panels["series"])
    assert {(t, v): c for t, v, c in got} == series
    assert [t for t, _, _ in got] == sorted(t for t, _, _ in got)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), span_s=st.sampled_from([300, 900, 3600]), offset_ms=st.integers(0, 600_000),
       ago_s=st.integers(0, 2000), country=st.sampled_from(["", "DE", "'; --"]))  # fmt: skip
def test_raw_event_panels_are_stitched_to_the_whole_ranges_rows(
    catalog: query.Catalog, seed: int, span_s: int, offset_ms: int, ago_s: int, country: str
) -> None:
    """Panels no roll-up answers (here: none configured) read the raw events in pieces of "ts" too, from the
    range's own start to the millisecond, and give the one statement's rows."""
    raw_only = dataclasses.replace(catalog, rollups=())
    start = T0 + offset_ms
    end = start + span_s * 1000
    now = end + ago_s * 1000
    rows = events(seed, start - 20_000, end + 20_000)
    filters = {"country": country} if country else {}
    bucket = query.bucket_for(start, end)
    panels = {"top": query.breakdown(raw_only, "type", start, end, filters, now_ms=now),
              "series": query.timeseries(raw_only, start, end, filters, bucket, now_ms=now)}  # fmt: skip
    assert all(sql.stitch is not None and sql.source.is_raw for sql in panels.values())
    out = fetch(QueryService(FakePinot(rows)), panels, ttl_s=5)
    kept = [r for r in rows if start <= r[0] < end and all({"type": r[1], "country": r[2]}[k] == v
                                                             for k, v in filters.items())]  # fmt: skip
    by_type: dict[str, int] = defaultdict(int)
    series: dict[tuple[int, str], int] = defaultdict(int)
    for r in kept:
        by_type[r[1]] += 1
        series[(r[0] - r[0] % bucket, r[1])] += 1
    assert dict(_rows(out, panels["top"])) == by_type
    assert {(t, v): c for t, v, c in _rows(out, panels["series"])} == series


def test_a_raw_panel_refresh_reads_the_open_tail_not_the_range(catalog: query.Catalog) -> None:
    """The 15-minute view's top campaigns (campaign_15m's windows are too long for it) one step later: the
    events of the open tail and the moved edge are read again, not the 15 minutes."""
    end = T0 + 3_600_000
    pinot = FakePinot(events(4, end - 2_000_000, end + 100_000))
    service = QueryService(pinot)

    def refresh(at_ms: int) -> list[tuple[int, int]]:
        pinot.statements.clear()
        sql = query.breakdown(catalog, "campaign", at_ms - 900_000, at_ms, {}, now_ms=at_ms)
        assert sql.source.is_raw and "too long for this range" in sql.source.note and sql.stitch is not None
        assert isinstance(fetch(service, {"top": sql}, ttl_s=5)[sql.text], Result)
        (text,) = pinot.statements
        return [(int(a), int(b)) for a, b in re.findall(r'"ts" >= (\d+) AND "ts" < (\d+)', text)]

    assert refresh(end) == [(end - 900_000, end)]
    again = refresh(end + 5000)
    assert again[0][0] == end + 5000 - 900_000  # the edge piece, its start moved
    assert sum(hi - lo for lo, hi in again) <= 2 * 60_000 + SETTLED_S * 1000 + 5000  # pieces of a minute


def test_a_statement_cut_at_its_limit_marks_the_panel(catalog: query.Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    """Raw events' values are not capped: a piece statement that returns as many rows as its LIMIT may have left
    values out, and the panel says so (groups_limit_reached) instead of showing a top list that may be wrong."""
    raw_only = dataclasses.replace(catalog, rollups=())
    end = T0 + 3_600_000
    rows = events(6, end - 1_000_000, end)

    def top() -> Result:
        sql = query.breakdown(raw_only, "country", end - 900_000, end, {}, now_ms=end)
        got = fetch(QueryService(FakePinot(rows)), {"top": sql}, ttl_s=5)[sql.text]
        assert isinstance(got, Result)
        return got

    assert not top().groups_limit_reached
    monkeypatch.setattr("dashboard.stitch.MAX_ROWS", 4)  # fewer than 15 pieces x 5 countries
    assert top().groups_limit_reached


def _rows(out: dict[str, Result | PinotError], sql: query.Sql) -> tuple[tuple[Any, ...], ...]:
    result = out[sql.text]
    assert isinstance(result, Result), result
    return result.rows


def test_a_refresh_reads_only_what_can_have_changed(catalog: query.Catalog) -> None:
    """An open 15-minute page one step later: the final and settled pieces come from what was kept, the
    statement reads the open tail and the edge whose bounds moved; past a settled piece's TTL it is read again."""
    clock = [0.0]
    end = T0 + 3_600_000
    pinot = FakePinot(events(3, end - 2_000_000, end + 100_000))
    service = QueryService(pinot, clock=lambda: clock[0])

    def refresh(at_ms: int) -> list[tuple[int, int]]:
        pinot.statements.clear()
        panels = {"totals": query.totals(catalog, at_ms - 900_000, at_ms, {}, at_ms)}
        out = fetch(service, panels, ttl_s=5)
        assert isinstance(out[panels["totals"].text], Result)
        (text,) = pinot.statements or [""]
        return read_spans(text, PIPELINE).get("type_10s", [])

    first = refresh(end)
    assert first == [(end - 900_000, end)]  # cold: every piece, one range
    clock[0] += 5
    second = refresh(end + 5000)
    sql = query.totals(catalog, end + 5000 - 900_000, end + 5000, {}, end + 5000)
    assert sql.stitch is not None
    open_from = min(p.lo for p in sql.stitch.pieces if p.kind == "open")
    # the moved head edge (its bounds changed) and the open pieces, nothing else (to the window holding the end)
    assert second[-1] == (open_from, end + 10_000)
    assert all(hi - lo <= sql.stitch.size_ms for lo, hi in second[:-1]) and len(second) <= 2
    read = sum(hi - lo for lo, hi in second)
    assert read <= 2 * sql.stitch.size_ms + (end + 5000 - open_from)
    assert open_from >= end + 5000 - SETTLED_S * 1000 - sql.stitch.size_ms
    # a settled piece is kept 30 to 60 s (spread, so that the pieces of one cold read expire apart); past that
    # a refresh reads it again, and the final ones still not
    settled = [p for p in sql.stitch.pieces if p.kind == "settled"]
    assert len({ttl_of(p, 5) for p in settled}) > 1 and all(30 <= ttl_of(p, 5) < 60 for p in settled)
    clock[0] += 56
    third = refresh(end + 5000)
    assert settled and all(any(lo <= p.lo and p.hi <= hi for lo, hi in third) for p in settled)
    final = [p for p in sql.stitch.pieces if p.kind == "final"]
    assert final and not any(lo <= p.lo and p.hi <= hi for p in final[1:] for lo, hi in third)


def test_pinot_down_shows_the_last_good_rows_marked_stale(catalog: query.Catalog) -> None:
    end = T0 + 3_600_000
    pinot = FakePinot(events(5, end - 1_000_000, end))
    service = QueryService(pinot)
    panels = {"top": query.breakdown(catalog, "country", end - 900_000, end, {}, now_ms=end)}
    good = fetch(service, panels, ttl_s=5)[panels["top"].text]
    assert isinstance(good, Result) and good.rows and not good.stale
    pinot.down = True
    later = {"top": query.breakdown(catalog, "country", end - 895_000, end + 5000, {}, now_ms=end + 5000)}
    stale = fetch(service, later, ttl_s=5, fresh=True)[later["top"].text]
    assert isinstance(stale, Result) and stale.stale and "unreachable" in stale.error and stale.rows == good.rows
    other = {"top": query.breakdown(catalog, "device", end - 900_000, end, {}, now_ms=end)}  # never asked
    failed = fetch(service, other, ttl_s=5)[other["top"].text]
    assert isinstance(failed, PinotError) and "unreachable" in str(failed)


@given(span_s=st.integers(60, 40 * 86_400), start_s=st.integers(0, 86_400), now_s=st.integers(-3600, 90_000))
def test_pieces_cover_the_range_exactly_and_age_with_the_clock(span_s: int, start_s: int, now_s: int) -> None:
    size = piece_size(span_s * 1000, (WINDOW, query.bucket_for(0, span_s * 1000)), query.NICE_BUCKETS_S)
    assert size % WINDOW == 0 and size % query.bucket_for(0, span_s * 1000) == 0
    assert size * 24 >= span_s * 1000 or size == max(s * 1000 for s in query.NICE_BUCKETS_S)
    first, end = T0 + start_s * 1000, T0 + (start_s + span_s) * 1000
    now = end + now_s * 1000
    cut = pieces(first, end, size, now, 300_000)
    assert cut[0].lo == first and cut[-1].hi == end
    assert all(a.hi == b.lo for a, b in itertools.pairwise(cut))
    assert all(p.bucket % size == 0 and p.bucket <= p.lo < p.hi <= p.bucket + size for p in cut)
    order = {"final": 0, "settled": 1, "open": 2}
    assert [order[p.kind] for p in cut] == sorted(order[p.kind] for p in cut)  # older pieces age first
    for p in cut:
        if p.kind == "final":
            assert p.bucket + size <= now - 300_000 - FINAL_SLACK_MS
        if p.kind == "open":
            assert p.bucket + size > now - SETTLED_S * 1000


def test_a_piece_statement_reads_adjacent_pieces_as_one_range(catalog: query.Catalog) -> None:
    sql = query.totals(catalog, T0, T0 + 900_000, {}, T0 + 900_000)
    assert sql.stitch is not None
    p = sql.stitch.pieces
    (text,) = sql.stitch.texts([p[0], p[1], p[3]])
    assert read_spans(text, PIPELINE) == {"type_10s": [(p[0].lo, p[1].hi), (p[3].lo, p[3].hi)]}
    assert '"window_start" IN (' in text  # a few windows: their starts listed (an index lookup, not a scan)
    assert text.endswith("GROUP BY piece LIMIT 3")
    assert isinstance(p[0], Piece)
    # A roll-up's span of a few windows lists their starts (an index lookup in Pinot, where a range scans every row
    # of a consuming segment); a longer one stays a range
    level = sql.stitch.levels[-1]
    few, many = ((level, T0, T0 + n * level.size_ms) for n in (LISTED_MAX, LISTED_MAX + 1))
    assert f'"window_start" IN ({T0}, {T0 + level.size_ms}, ' in spans_condition([few], listed=True)
    assert (
        spans_condition([many], listed=True)
        == spans_condition([many])
        == (f'("rollup_name" = \'{level.name}\' AND (("window_start" >= {T0} AND "window_start" < {many[2]})))')
    )
    assert read_spans(spans_condition([few], listed=True), PIPELINE) == read_spans(spans_condition([few]), PIPELINE)


def test_raw_ranges_list_their_buckets_so_that_pinot_scans_their_rows_only() -> None:
    """A raw events' range of "ts" (no index on a consuming segment: a scan of every row) comes after the list of
    its 10 s buckets (an inverted index): each bucket any range touches, none other; more than LISTED_MAX of them
    and the ranges stand alone."""
    level = raw_level("events_raw")
    spans = [(level, T0 + 4_321, T0 + 25_000), (level, T0 + 25_000, T0 + 30_000), (level, T0 + 95_000, T0 + 95_001)]
    text = spans_condition(spans, listed=True)
    assert text == (f'(("ts_10s" IN ({T0}, {T0 + 10_000}, {T0 + 20_000}) AND "ts" >= {T0 + 4_321} AND "ts" < '
                    f'{T0 + 30_000}) OR ("ts_10s" IN ({T0 + 90_000}) AND "ts" >= {T0 + 95_000} AND "ts" < '
                    f'{T0 + 95_001}))')  # fmt: skip
    assert (
        read_spans(text, PIPELINE)
        == read_spans(spans_condition(spans), PIPELINE)
        == {"": [(T0 + 4_321, T0 + 30_000), (T0 + 95_000, T0 + 95_001)]}
    )
    assert read_spans(f'("ts_10s" IN ({T0}) AND "ts" >= {T0 + 5_000} AND "ts" < {T0 + 15_000})', PIPELINE) == {
        "": [(T0 + 5_000, T0 + 10_000)]  # the test's reader takes the list at its word
    }
    long = [(level, T0, T0 + (LISTED_MAX + 1) * RAW_BUCKET_MS)]
    assert spans_condition(long, listed=True) == spans_condition(long) == f'(("ts" >= {T0} AND "ts" < {long[0][2]}))'


def test_a_day_reads_the_hours_published_and_the_rest_from_finer_windows(catalog: query.Catalog) -> None:
    """24 hours: type_1h, derived from type_5m, answers the hours the probe finds published (and past the
    lateness), type_5m (final only) the 5-minute windows published after them, and type_10s in the live table
    the rest: one statement per table; the rows are the whole range's either way. With the probe failing (or
    nothing published) the finer roll-ups are read, type_10s as far back as the recent tier keeps it (from the
    recent tier's table what the live one no longer keeps)."""
    hour = 3_600_000
    end = T0 + 30 * hour + 723_000  # 12 minutes past: the first hour is read in part, from type_5m
    start = end - 24 * hour
    rows = events(11, start - hour, end, gap_ms=40_000)
    first = start - start % 300_000  # whole windows of the finest roll-up that keeps the start
    last = end - end % 10_000 + 10_000  # ... to the end of the window holding the range's end
    kept = expected(rows, first, end, {})

    def read(published: dict[str, int]) -> tuple[dict[str, list[tuple[int, int]]], tuple[Any, ...]]:
        pinot = FakePinot(rows)
        pinot.published = published
        panels = {"totals": query.totals(catalog, start, end, {}, end)}
        stitch = panels["totals"].stitch
        assert stitch is not None and [lv.name for lv in stitch.levels] == [
            "type_1h",
            "type_5m",
            "type_10s",
            "type_10s",
        ]
        out = fetch(QueryService(pinot), panels, ttl_s=5)
        spans: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for text in pinot.statements:
            for name, ranges in read_spans(text, PIPELINE).items():
                table = re.search(r"FROM (\w+) WHERE", text).group(1)  # type: ignore[union-attr]
                assert table in (("aggregates", "aggregates_live") if name == "type_10s" else ("aggregates_history",))
                key = f"{name}@live" if table == "aggregates_live" else name
                spans[key] += ranges
        tables = [re.search(r"FROM (\w+) WHERE", t).group(1) for t in pinot.statements]  # type: ignore[union-attr]
        assert len(tables) == len(set(tables))  # one per table read
        return spans, _rows(out, panels["totals"])[0]

    def lo(spans: list[tuple[int, int]]) -> int:
        return min(a for a, _ in spans)

    def hi(spans: list[tuple[int, int]]) -> int:
        return max(b for _, b in spans)

    newest = end - end % hour - 6 * hour  # the probe: type_1h's newest window starts 6 hours before the end
    five = end - end % 300_000 - 600_000  # ... and type_5m's 10 minutes before
    spans, (count, users, _) = read({"type_1h": newest, "type_5m": five})
    assert count == len(kept) and users == len({r[3] for r in kept})
    assert spans["type_1h"] and all(a % hour == 0 and b % hour == 0 and b <= newest for a, b in spans["type_1h"])
    assert hi(spans["type_1h"]) == newest  # every hour published is read from type_1h
    assert lo(spans["type_5m"]) == first and hi(spans["type_5m"]) == five
    assert "type_10s" not in spans and lo(spans["type_10s@live"]) == five and hi(spans["type_10s@live"]) == last
    late_only = end - catalog.lateness_ms - FINAL_SLACK_MS  # a probe ahead of the time rule: the time rule wins
    spans, (count, _, _) = read({"type_1h": end, "type_5m": end})
    assert count == len(kept) and hi(spans["type_1h"]) == late_only - late_only % hour
    assert hi(spans["type_5m"]) == lo(spans["type_10s@live"]) == late_only - late_only % 300_000
    spans, (count, _, _) = read({})  # nothing published yet: type_10s where the recent tier keeps it
    recent = end - 3 * hour
    live = end - 75 * 60_000 + LIVE_SLACK_MS  # the live table keeps 75 minutes
    assert count == len(kept) and set(spans) == {"type_5m", "type_10s", "type_10s@live"}
    assert hi(spans["type_5m"]) == lo(spans["type_10s"]) == recent - recent % 300_000
    assert hi(spans["type_10s@live"]) == last
    assert hi(spans["type_10s"]) == lo(spans["type_10s@live"]) == live - live % 10_000
    # A pipeline stopped (or backfilled) hours ago: its newest windows are older than the probe's first look, and
    # the second look over the range finds them; what the recent tier no longer keeps is read from type_5m
    old = end - end % hour - 10 * hour
    spans, (count, _, _) = read({"type_1h": old, "type_5m": old + 1_800_000})
    assert count == len(kept) and hi(spans["type_1h"]) == old
    assert hi(spans["type_5m"]) == lo(spans["type_10s"]) == recent - recent % 300_000
    assert hi(spans["type_10s@live"]) == last
