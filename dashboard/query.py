"""The dashboard's SQL: which table answers a panel, and the statement for it. Pure: no I/O, no Streamlit.

Only names from the configuration reach the SQL text (as double-quoted identifiers, checked against the
catalog), and every value is a single-quoted literal with quotes doubled, checked for length and control
characters first. Anything else raises QueryError before a statement exists.

Roll-ups: a panel that groups or filters by a set of dimensions is answered by the smallest tumbling roll-up
whose dimensions cover that set and whose window divides the time bucket; when none does, by the raw-events
table, and the panel says so. Sliding roll-ups are never summed (their windows overlap).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dashboard.stitch import (
    Level,
    Measure,
    Shape,
    Stitch,
    by_level,
    live_from,
    piece_size,
    pieces,
    published_by,
    raw_level,
    spans_condition,
)
from livedash.pipeline.rows import DISTINCT, EVENT_COUNT, LAST_EVENT_TS, QUANTILE_TDIGEST
from livedash.pipeline.settings import PipelineSettings

MAX_LITERAL = 256  # the pipeline refuses longer dimension values, so no stored value is longer
NICE_BUCKETS_S = (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class QueryError(ValueError):
    """A request the query layer refuses (unknown name, unusable value)."""


@dataclass(frozen=True, slots=True)
class RollupInfo:
    name: str
    dimensions: frozenset[str]
    size_ms: int
    max_rows_per_s: float  # product of the dimensions' caps per window second: what a query may have to scan
    table: str = "aggregates"  # its tier's table
    retention_ms: int = 2**62  # how far back from now its table keeps rows
    derived_from: str | None = None  # built from this finer roll-up's final windows (the cascade): final only
    live_from: str | None = None  # final only too; until final, its windows are read from this finer roll-up
    # Its open windows are in this table (PipelineSettings.has_running_rows: the live one), kept so long
    open_table: str | None = None
    open_retention_ms: int = 2**62


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the dashboard may name: the configured dimensions, metrics, types and tumbling roll-ups."""

    dimensions: tuple[str, ...]  # every dimension of the contract ("type" first); all are columns of events_raw
    rollup_dimensions: tuple[str, ...]  # those some roll-up groups by: columns of the aggregates table
    metrics: tuple[str, ...]
    types: tuple[str, ...]
    rollups: tuple[RollupInfo, ...]  # tumbling only, smallest window first
    quantile_field: str
    live_table: str = "aggregates_live"  # every roll-up's open windows
    distinct_field: str = "user_id"
    theta_lg_k: int = 12  # the roll-ups' Theta sketch size: 2 ** lg_k nominal entries
    raw_table: str = "events_raw"
    lateness_ms: int = 300_000  # windows.allowed_lateness_s: a window's rows are final that long after its end

    @classmethod
    def from_settings(cls, settings: PipelineSettings) -> Catalog:
        caps = settings.events.dimensions
        rollups = sorted(
            (RollupInfo(r.name, frozenset(r.dimensions), r.window.size_s * 1000,
                        math.prod(caps[d] for d in r.dimensions) / r.window.size_s, settings.table_of(r),
                        settings.retention_ms(r), r.derived_from, r.live_from,
                        settings.topics.live if settings.copies_to_live(r) else None,
                        settings.retention_ms_of("live"))
             for r in settings.rollups if r.window.every_s is None),
            key=lambda r: (r.size_ms, r.max_rows_per_s),
        )  # fmt: skip
        dims = tuple(settings.events.dimensions)
        dims = ("type", *(d for d in dims if d != "type"))
        return cls(dims, settings.all_dimensions, tuple(settings.events.metrics), tuple(settings.events.types),
                   tuple(rollups), settings.sketches.quantile_field, live_table=settings.topics.live,
                   distinct_field=settings.sketches.distinct_field, theta_lg_k=settings.sketches.theta_lg_k,
                   lateness_ms=int(settings.windows.allowed_lateness_s * 1000))  # fmt: skip

    def levels(self, rollup: RollupInfo, table: str | None = None) -> tuple[Level, ...]:
        """The roll-up, then those it is derived from down to the one folded from events, then the one that is
        live from, then the last of these again in the table of its open windows (dashboard/stitch.py); table:
        those in that table only."""
        by_name = {r.name: r for r in self.rollups}
        chain = [rollup]
        while chain[-1].derived_from is not None:
            chain.append(by_name[chain[-1].derived_from])
        levels = [Level(r.name, r.size_ms, r.table, r.retention_ms) for r in chain]
        finest = chain[-1]
        if finest.live_from is not None:
            finest = by_name[finest.live_from]
            levels.append(Level(finest.name, finest.size_ms, finest.table, finest.retention_ms))
        if finest.open_table is not None:
            levels.append(Level(finest.name, finest.size_ms, finest.open_table, finest.open_retention_ms))
        return tuple(lv for lv in levels if table in (None, lv.table))


@dataclass(frozen=True, slots=True)
class Source:
    """The table that answers a panel: a roll-up of the aggregates table, or the raw events."""

    rollup: RollupInfo | None
    note: str = ""  # why raw events answer, shown on the panel

    @property
    def is_raw(self) -> bool:
        return self.rollup is None


@dataclass(frozen=True, slots=True)
class Quantile:
    """Raw events only: the totals' p95 over the rows that carry the quantile field, appended to the main
    statement's one row. A row without the field holds null there (the raw table's null vectors), which an
    aggregate would read as 0; Pinot 0.11 refuses FILTER (WHERE ...) on one aggregate, so the rows are filtered
    in a second statement."""

    text: str  # SELECT PERCENTILETDIGEST(..) FROM .. WHERE .. AND field IS NOT NULL

    def key(self, panel: str) -> str:
        """The statement's Sql.key (across time), for the panel keyed `panel`."""
        return f"p95:{panel}"

    @staticmethod
    def merge(rows: Sequence[Sequence[Any]], found: Sequence[Sequence[Any]]) -> tuple[tuple[Any, ...], ...]:
        """The main rows, each with the p95 appended (None where no row carried the field)."""
        p95 = found[0][0] if found else None
        return tuple((*r, p95) for r in rows)


@dataclass(frozen=True, slots=True)
class Carried:
    """Raw events listed: which of them carry each metric. Pinot 0.11 answers an absent value with the column's
    default (0) unless null handling is on, and that needs the server's experimental DataTable version 4; the
    null vectors still answer IS NOT NULL, so one statement per metric names the listed events that carry it."""

    table: str
    metrics: tuple[str, ...]
    where: str  # the listing's time range and filters

    def statements(self, event_ids: Sequence[str]) -> dict[str, str]:
        ids = ", ".join(literal(str(e)) for e in sorted(set(event_ids))) or literal("")
        return {m: (f'SELECT "event_id" FROM {self.table} WHERE {self.where} AND "event_id" IN ({ids}) '
                    f'AND "{m}" IS NOT NULL LIMIT {_limit(len(event_ids), 1000)}') for m in self.metrics}  # fmt: skip

    @staticmethod
    def blank(rows: Sequence[dict[str, Any]], carried: Mapping[str, set[str]]) -> list[dict[str, Any]]:
        """The rows with None for each metric an event does not carry."""
        return [{**row, **{m: None for m, ids in carried.items() if row["event_id"] not in ids}} for row in rows]


class Sql(NamedTuple):
    text: str
    source: Source
    # The panel across time: everything the statement says but its time range (a live panel's text changes with
    # every step of its range; its last good rows are still the ones to show while Pinot is down).
    key: str
    quantile: Quantile | None = None  # raw events: the p95 column comes from a second statement
    carried: Carried | None = None  # raw events listed: which metrics each event carries
    stitch: Stitch | None = None  # a roll-up's: read in pieces, cached apart (the text is the whole range's)


# -- names and literals ----------------------------------------------------------------------------------------


def literal(value: str) -> str:
    """A single-quoted SQL string literal, or QueryError."""
    if not isinstance(value, str):
        raise QueryError(f"a value must be a string, got {type(value).__name__}")
    if len(value) > MAX_LITERAL:
        raise QueryError(f"a value is longer than {MAX_LITERAL} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise QueryError("a value contains control characters")
    return "'" + value.replace("'", "''") + "'"


def column(name: str, allowed: Iterable[str]) -> str:
    """A double-quoted identifier for a configured name, or QueryError."""
    if not isinstance(name, str) or name not in set(allowed):
        raise QueryError(f"unknown column {str(name)[:40]!r}")
    return f'"{name}"'


def check_filters(catalog: Catalog, filters: Mapping[str, str]) -> dict[str, str]:
    for name, value in filters.items():
        column(name, catalog.dimensions)
        literal(value)
    return dict(filters)


# -- choosing the table ----------------------------------------------------------------------------------------


EDGE_WINDOWS = 20  # a roll-up is precise for a range at least this many of its windows long
MIN_WINDOWS = 2  # nor does a roll-up answer a range shorter than this many of its windows (raw events do)


def choose_source(
    catalog: Catalog,
    dims: Iterable[str],
    bucket_ms: int | None = None,
    start_ms: int | None = None,
    end_ms: int | None = None,
    now_ms: int | None = None,
) -> Source:
    """The smallest roll-up (fewest rows per second at its caps, then the largest window) covering `dims`,
    dividing the bucket and kept by its tier back to the range's start; among those, one whose windows are
    small against the range (ranges take whole windows, so the first may reach up to a window before the
    start) when there is one, else the finest if the range holds at least MIN_WINDOWS of its windows. Else the
    raw events, with the reason."""
    needed = set(dims)
    for name in needed:
        column(name, catalog.dimensions)
    covering = [r for r in catalog.rollups if needed <= r.dimensions]
    fits = [r for r in covering if bucket_ms is None or bucket_ms % r.size_ms == 0]
    if start_ms is not None:
        now = now_ms if now_ms is not None else end_ms
        if now is not None:
            fits = [r for r in fits if start_ms >= now - r.retention_ms]
        if end_ms is not None and fits:
            precise = [r for r in fits if r.size_ms * EDGE_WINDOWS <= end_ms - start_ms]
            if not precise:  # a short range: the finest windows, then the fewest rows, if not too coarse
                usable = [r for r in fits if r.size_ms * MIN_WINDOWS <= end_ms - start_ms]
                if usable:
                    return Source(min(usable, key=lambda r: (r.size_ms, r.max_rows_per_s)))
                finest = min(r.size_ms for r in fits) // 1000
                return Source(None, f"computed from raw events: the roll-ups grouping by {', '.join(sorted(needed))} "
                                    f"have windows ({finest} s or more) too long for this range")  # fmt: skip
            fits = precise
    if fits:
        return Source(min(fits, key=lambda r: (r.max_rows_per_s, -r.size_ms)))
    missing = sorted(needed - set(catalog.rollup_dimensions))
    if missing:
        why = f"no roll-up groups by {', '.join(missing)}"
    elif covering and bucket_ms is not None and not any(bucket_ms % r.size_ms == 0 for r in covering):
        why = f"no roll-up covering {', '.join(sorted(needed))} has windows that divide {bucket_ms // 1000} s buckets"
    elif covering:
        why = f"no roll-up covering {', '.join(sorted(needed))} is kept that far back"
    else:
        why = f"no roll-up groups by {', '.join(sorted(needed))} together"
    return Source(None, f"computed from raw events: {why}")


def bucket_for(start_ms: int, end_ms: int, points: int = 120) -> int:
    """A round bucket (ms) giving about `points` points over the range."""
    want_s = max(1, (end_ms - start_ms) // 1000 // points)
    for step in NICE_BUCKETS_S:
        if step >= want_s:
            return step * 1000
    return NICE_BUCKETS_S[-1] * 1000


# -- statements ------------------------------------------------------------------------------------------------


def where(catalog: Catalog, source: Source, start_ms: int, end_ms: int, filters: Mapping[str, str],
          now_ms: int | None = None) -> str:  # fmt: skip
    """Time range and filters. A roll-up's windows are taken whole: those starting in [start, end). A derived
    roll-up's windows are published final only, so the part of the range not published by now (default: the
    end) is read from the roll-ups it is derived from, the same rows as the stitched panel's in steady state.
    One statement reads one table (one_table): where that is not the live table, the windows not final yet are
    not read here (the stitched panel reads them there)."""
    if source.rollup is None:
        times = [f'"ts" >= {int(start_ms)}', f'"ts" < {int(end_ms)}']
        return " AND ".join(times + _filters(catalog, source, filters))
    now = int(now_ms if now_ms is not None else end_ms)
    levels = catalog.levels(source.rollup, one_table(catalog, source, start_ms, now))
    published = published_by(now, catalog.lateness_ms)
    spans = by_level(levels, _first(levels, start_ms, now), int(end_ms), {lv.name: published for lv in levels})
    return " AND ".join([spans_condition(spans), *_filters(catalog, source, filters)])


def _filters(catalog: Catalog, source: Source, filters: Mapping[str, str]) -> list[str]:
    """The filters: everything a statement's WHERE says but the roll-up and the time."""
    check_filters(catalog, filters)
    names = catalog.dimensions if source.rollup is None else catalog.rollup_dimensions
    return [f"{column(name, names)} = {literal(value)}" for name, value in sorted(filters.items())]  # absent: MISSING


def _first(levels: Sequence[Level], start_ms: int, now_ms: int) -> int:
    """The first window a range starting at start_ms takes (whole windows: the one holding the start), of the
    finest roll-up of the chain that still keeps it (the start of a range read from a derived roll-up is read
    from finer ones)."""
    kept = [lv for lv in levels if start_ms >= now_ms - lv.kept_ms] or levels[:1]
    return int(start_ms) - int(start_ms) % kept[-1].size_ms


def _stitch(catalog: Catalog, source: Source, start_ms: int, end_ms: int, filters: Mapping[str, str],
            now_ms: int | None, key: str, shape: Shape, columns: Sequence[str], measures: Sequence[tuple[Measure, str]],
            limit: int = 1, series_ms: int | None = None) -> Stitch:  # fmt: skip
    """A panel's pieces (dashboard/stitch.py): the same rows as its statement, read per bucket. The piece size
    is a multiple of the roll-up's window and of the range's series bucket (a series' rows then fall in one piece
    each), the same for every panel of a range. Raw events too: a short range (windows too coarse for it) or a
    dimension no roll-up has would otherwise re-read every event of the range at every refresh."""
    rollup = source.rollup
    levels = catalog.levels(rollup) if rollup is not None else (raw_level(catalog.raw_table),)
    size = piece_size(end_ms - start_ms, (levels[0].size_ms, bucket_for(start_ms, end_ms)), NICE_BUCKETS_S)
    when = _datetime_bucket(f'"{levels[0].time}"', series_ms if series_ms else size)
    selected = ", ".join([f"{when} AS piece", *columns, *(text for _, text in measures)])
    head = f"SELECT {selected} FROM"
    tail = " GROUP BY " + ", ".join(["piece", *columns])
    now = int(now_ms if now_ms is not None else end_ms)
    cut = pieces(_first(levels, start_ms, now), int(end_ms), size, now, catalog.lateness_ms)
    return Stitch(key, head, tuple(_filters(catalog, source, filters)), tail, len(columns),
                  tuple(m for m, _ in measures), shape, limit, size, cut, levels,
                  published_by(now, catalog.lateness_ms), now, catalog.theta_lg_k)  # fmt: skip


def _datetime_bucket(time_col: str, bucket_ms: int) -> str:
    return f"DATETIMECONVERT({time_col}, '1:MILLISECONDS:EPOCH', '1:MILLISECONDS:EPOCH', '{bucket_ms // 1000}:SECONDS')"


def _key(kind: str, source: Source, filters: Mapping[str, str], *rest: object) -> str:
    """Sql.key: the builder, the table (a roll-up's name, or raw events), the filters and the other arguments
    that shape the statement (one_table's choice among them), never the time range."""
    table = "raw" if source.rollup is None else source.rollup.name
    return repr((kind, table, tuple(sorted(filters.items())), *rest))


def one_table(catalog: Catalog, source: Source, start_ms: int, now_ms: int) -> str:
    """The table of one statement over a range (the panel's SQL, its console link): the roll-up's live table
    where it keeps the whole range (a short view: every window, open ones too, as the stitched panel reads it),
    else its tier's."""
    rollup = source.rollup
    if rollup is None:
        return catalog.raw_table
    if rollup.open_table is not None and start_ms >= live_from(now_ms, rollup.open_retention_ms):
        return rollup.open_table
    return rollup.table


def _events(source: Source) -> str:
    return "COUNT(*)" if source.is_raw else f'SUM("{EVENT_COUNT}")'


def _measures(catalog: Catalog, source: Source) -> list[str]:
    """The totals' events, unique users and p95 of the quantile field: merged from sketches on roll-ups, and
    built as sketches from raw events too. Exact DISTINCTCOUNT and PERCENTILE keep every value per group on the
    server: over a day of raw events (48 million rows) one refresh ran a 4 GB Pinot out of heap
    (docs/benchmarks.md)."""
    if source.is_raw:  # the p95 comes from `_quantile`'s statement
        theta = f"'nominalEntries={2 ** int(catalog.theta_lg_k)}'"  # as the roll-ups': the same error bound
        return [_events(source), f'DISTINCTCOUNTTHETASKETCH("{catalog.distinct_field}", {theta})']
    return [_events(source), f'DISTINCTCOUNTTHETASKETCH("{DISTINCT}")', f'PERCENTILETDIGEST("{QUANTILE_TDIGEST}", 95)']


def _quantile(catalog: Catalog, where_sql: str) -> Quantile:
    q = f'"{catalog.quantile_field}"'
    return Quantile(f"SELECT PERCENTILETDIGEST({q}, 95) FROM {catalog.raw_table} WHERE {where_sql} AND {q} IS NOT NULL")


def totals(catalog: Catalog, start_ms: int, end_ms: int, filters: Mapping[str, str], now_ms: int | None = None) -> Sql:
    """One row: events, unique users, p95. now_ms (default end_ms): which tiers still hold the range.

    The only statement that merges sketches: Pinot unpacks each row's Theta sketch and t-digest, about 1 and 3
    us a row here (the sum alone: under 0.3 us), so the panels that show events only ask for events only. On a
    roll-up it is read in pieces, each piece's sketches merged by Pinot and the pieces' merged here."""
    source = choose_source(catalog, filters, None, start_ms, end_ms, now_ms)
    measures = ", ".join(_measures(catalog, source))
    cond = where(catalog, source, start_ms, end_ms, filters, now_ms)
    table = one_table(catalog, source, start_ms, now_ms or end_ms)
    sql = f"SELECT {measures} FROM {table} WHERE {cond}"
    key = _key("totals", source, filters, table)
    if source.is_raw:
        return Sql(sql, source, key, _quantile(catalog, cond))
    sketches: list[tuple[Measure, str]] = [  # each piece's merged sketches, merged again by Stitch
        ("sum", _events(source)),
        ("theta", f'DISTINCTCOUNTRAWTHETASKETCH("{DISTINCT}")'),
        ("p95", f'PERCENTILERAWTDIGEST("{QUANTILE_TDIGEST}", 95)'),
    ]
    return Sql(
        sql, source, key, stitch=_stitch(catalog, source, start_ms, end_ms, filters, now_ms, key, "one", (), sketches)
    )


TOP_VALUES = 10  # values a breakdown panel shows


def by_type(catalog: Catalog, start_ms: int, end_ms: int, filters: Mapping[str, str], now_ms: int | None = None) -> Sql:
    """Events per type (for the rates: conversion, click-through): the type breakdown's statement when it holds
    every type, so one query answers both."""
    limit = max(TOP_VALUES, len(catalog.types) + 2)
    return breakdown(catalog, "type", start_ms, end_ms, filters, limit=limit, now_ms=now_ms)


def breakdown(
    catalog: Catalog,
    dim: str,
    start_ms: int,
    end_ms: int,
    filters: Mapping[str, str],
    limit: int = TOP_VALUES,
    now_ms: int | None = None,
) -> Sql:
    """Top values of a dimension by events: value, events."""
    col = column(dim, catalog.dimensions)
    source = choose_source(catalog, {dim, *filters}, None, start_ms, end_ms, now_ms)
    events = _events(source)
    cond = where(catalog, source, start_ms, end_ms, filters, now_ms)
    table = one_table(catalog, source, start_ms, now_ms or end_ms)
    sql = (f"SELECT {col}, {events} FROM {table} WHERE {cond} GROUP BY {col} "
           f"ORDER BY {events} DESC LIMIT {_limit(limit)}")  # fmt: skip
    key = _key("breakdown", source, filters, dim, _limit(limit), table)
    stitch = _stitch(catalog, source, start_ms, end_ms, filters, now_ms, key, "top", (col,), [("sum", events)],
                     _limit(limit))  # fmt: skip
    return Sql(sql, source, key, stitch=stitch)


def timeseries(
    catalog: Catalog,
    start_ms: int,
    end_ms: int,
    filters: Mapping[str, str],
    bucket_ms: int,
    split: str = "type",
    now_ms: int | None = None,
) -> Sql:
    """Per bucket and value of `split`: bucket start (ms), value, events."""
    col = column(split, catalog.dimensions)
    if bucket_ms <= 0 or bucket_ms % 1000:
        raise QueryError("the bucket must be a positive number of whole seconds")
    source = choose_source(catalog, {split, *filters}, bucket_ms, start_ms, end_ms, now_ms)
    bucket = _datetime_bucket('"ts"' if source.is_raw else '"window_start"', bucket_ms)
    n = ((end_ms - start_ms) // bucket_ms + 2) * (len(catalog.types) + 2)
    cond = where(catalog, source, start_ms, end_ms, filters, now_ms)
    table = one_table(catalog, source, start_ms, now_ms or end_ms)
    sql = (f"SELECT {bucket} AS bucket, {col}, {_events(source)} FROM {table} "
           f"WHERE {cond} GROUP BY bucket, {col} ORDER BY bucket LIMIT {_limit(n, 100_000)}")  # fmt: skip
    key = _key("timeseries", source, filters, split, bucket_ms, _limit(n, 100_000), table)
    stitch = _stitch(catalog, source, start_ms, end_ms, filters, now_ms, key, "series", (col,),
                     [("sum", _events(source))], series_ms=bucket_ms)  # fmt: skip
    return Sql(sql, source, key, stitch=stitch)


def overview(catalog: Catalog, start_ms: int, end_ms: int, filters: Mapping[str, str], now_ms: int) -> dict[str, Sql]:
    """Every statement of the overview page for [start, end), by panel: the tiles' totals and rates for the
    range and the period before it, the series, and the top values of each dimension not filtered on."""
    span = end_ms - start_ms
    out = {
        "totals": totals(catalog, start_ms, end_ms, filters, now_ms),
        "totals, previous period": totals(catalog, start_ms - span, start_ms, filters, now_ms),
        "by type": by_type(catalog, start_ms, end_ms, filters, now_ms),
        "by type, previous period": by_type(catalog, start_ms - span, start_ms, filters, now_ms),
        "series": timeseries(catalog, start_ms, end_ms, filters, bucket_for(start_ms, end_ms), now_ms=now_ms),
    }
    for dim in catalog.dimensions:
        if dim not in filters:
            out[f"top {dim}"] = breakdown(catalog, dim, start_ms, end_ms, filters, now_ms=now_ms)
    return out


def raw_events(
    catalog: Catalog, start_ms: int, end_ms: int, filters: Mapping[str, str], page: int = 0, page_size: int = 50
) -> Sql:
    """The matching raw events, newest first, one page."""
    if page < 0 or not 1 <= page_size <= 1000:
        raise QueryError("page must be >= 0 and page size within 1-1000")
    source = Source(None)
    cols = ", ".join(f'"{c}"' for c in ("ts", "event_id", "user_id", *catalog.dimensions, *catalog.metrics))
    cond = where(catalog, source, start_ms, end_ms, filters)
    sql = (f"SELECT {cols} FROM {catalog.raw_table} WHERE {cond} "
           f'ORDER BY "ts" DESC LIMIT {int(page_size)} OFFSET {int(page) * int(page_size)}')  # fmt: skip
    key = _key("raw_events", source, filters, int(page), int(page_size))
    return Sql(sql, source, key, carried=Carried(catalog.raw_table, catalog.metrics, cond))


def freshest(catalog: Catalog) -> str:
    """The newest event time folded into any roll-up row (freshness of the aggregates: the live table)."""
    return f'SELECT MAX("{LAST_EVENT_TS}") FROM {catalog.live_table}'


def _limit(n: int, cap: int = 1000) -> int:
    return max(1, min(int(n), cap))
