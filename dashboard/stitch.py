"""A panel's range as pieces, one per time bucket, each fetched once and kept while it can still be right,
then merged into the panel's rows. Pure: no I/O. Roll-up panels, and raw-event breakdowns and series (their one
level, raw_level: pieces of "ts" from the range's own start; an event is a row).

A live page moves its range on every refresh, so its statements change every time and a cache of whole
statements reuses nothing (docs/benchmarks.md). Stitched, a panel's range [first window, end) is cut at
multiples of a piece size B (a multiple of the roll-up's window and of the series' bucket): a piece holds the
windows of one bucket that lie in the range. Its rows depend only on its bounds, so the cache keeps them by
(panel, bounds): a refresh re-reads the pieces whose windows are still open, the edge pieces whose bounds moved
and whatever expired, in one statement grouped by piece, and merges the rest from the cache.

How long a piece is kept follows what can still change it: windows that may still be open (the newest ones),
every refresh; windows ended longer ago than SETTLED_S change only through late events, so SETTLED_TTL_S to
twice that; final windows (past the allowed lateness) only through late corrections, so FINAL_TTL_S to twice
that. A late event therefore shows in a panel within that long of Pinot having it; the open tail, what the
live view is for, is never older than one refresh.

Levels: a panel answered by a roll-up published final only (derived by the cascade, as geo_1h from geo_5m's
final windows, or live from a finer roll-up, as geo_5m from geo_10s) reads each piece from the coarsest
roll-up of its chain whose windows there are published, and the rest from the finer ones, down to the roll-up
published while open (which holds the open tail): one statement per table the chain's levels are in (the
history tier's, and the recent tier's for the tail). A window counts as published once a later window of its
roll-up is in Pinot (the probe, `probe_text`) and its end is past the allowed lateness plus FINAL_SLACK_MS, or
where the finer level's table no longer keeps rows (a stopped pipeline's last windows); any level gives the
same rows for the windows it holds (a coarse window is the union of its finer final windows and their
corrections), so the pieces kept do not depend on the level they were read from.

Merging: sums add; distinct counts are the union of the pieces' Theta sketches (Pinot's
DISTINCTCOUNTRAWTHETASKETCH, base64), which is the same union Pinot computes over the rows, so the estimate and
its error bound are Pinot's; the p95 pools the pieces' t-digests (PERCENTILERAWTDIGEST, hex) without
re-compressing them (livedash/pipeline/aggregates.py, tdigest_quantile).
"""

from __future__ import annotations

import base64
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import datasketches as ds

from livedash.pipeline.aggregates import tdigest_quantile

Rows = Sequence[Sequence[Any]]
Measure = Literal["sum", "theta", "p95"]
Shape = Literal["one", "top", "series"]
Kind = Literal["open", "settled", "final"]

SETTLED_S = 30  # a window ended this long ago is past the partitions' watermarks: only late events change it
SETTLED_TTL_S = 30.0
FINAL_TTL_S = 600.0
FINAL_SLACK_MS = 60_000  # beyond the allowed lateness: the final rows' publication and ingestion
# A roll-up's windows are read from the live table (the running rows of open windows, the final rows copied)
# while it keeps them, up to this long before its retention ends: Pinot deletes a segment only once all of its
# windows are older than that, but the dashboard's clock and the controller's may differ. So a short view reads
# one table per panel, and the tier's table answers only what is older.
LIVE_SLACK_MS = 60_000


def live_from(now_ms: int, kept_ms: int) -> int:
    """Windows starting from then on are read from the live table, which keeps kept_ms (LIVE_SLACK_MS)."""
    return now_ms - kept_ms + LIVE_SLACK_MS


PIECES = 24  # about this many pieces to a range: few statements' rows, and little re-read per refresh
MAX_ROWS = 100_000  # Pinot's numGroupsLimit: a statement's rows are cut there (the result says so)


class Level(NamedTuple):
    """A roll-up of a panel's chain (the chosen one, then those it is derived from, then the one a final-only
    roll-up is live from: finest last)."""

    name: str  # "" for the raw events (raw_level): no roll-up to name, a row per event
    size_ms: int
    table: str = "aggregates"  # its tier's table
    kept_ms: int = 2**62  # how far back from now its table keeps rows
    time: str = "window_start"  # the column a piece's time range is on
    bucket: str = ""  # a column holding `time` rounded down to bucket_ms, with an inverted index (raw events)
    bucket_ms: int = 0


# The raw events' "ts" rounded down to 10 s, computed by Pinot at ingestion (pinot/tables/events_raw): a consuming
# segment has no index on "ts", so a range of it scans every row of the segment (hours of events), where the
# buckets of the range, from the inverted index, leave only their own rows to scan.
RAW_BUCKET, RAW_BUCKET_MS = "ts_10s", 10_000


def raw_level(table: str) -> Level:
    """The raw events as a panel's one level: rows are events, timed by "ts" to the millisecond."""
    return Level("", 1, table, time="ts", bucket=RAW_BUCKET, bucket_ms=RAW_BUCKET_MS)


class Piece(NamedTuple):
    bucket: int  # the bucket's start (ms): a multiple of the piece size
    lo: int  # the windows starting in [lo, hi)
    hi: int
    kind: Kind  # what can still change it: how long it is kept


def piece_size(span_ms: int, multiples: Iterable[int], nice_s: Sequence[int]) -> int:
    """The smallest round size (from nice_s, in seconds) at least span/PIECES that every one of `multiples`
    (ms) divides; else the least common multiple of them and a day."""
    need = [int(m) for m in multiples if m > 0]
    for step in nice_s:
        size = step * 1000
        if size * PIECES >= span_ms and all(size % m == 0 for m in need):
            return size
    return math.lcm(86_400_000, *need)


def pieces(first_ms: int, end_ms: int, size_ms: int, now_ms: int, lateness_ms: int) -> tuple[Piece, ...]:
    """The pieces of [first, end): one per bucket of `size_ms` it meets, with what can change each. A bucket's
    windows all end by the bucket's end (the window size divides the piece size)."""
    out: list[Piece] = []
    bucket = first_ms - first_ms % size_ms
    while bucket < end_ms:
        ends = bucket + size_ms
        kind: Kind = "final" if ends <= now_ms - lateness_ms - FINAL_SLACK_MS else (
            "settled" if ends <= now_ms - SETTLED_S * 1000 else "open")  # fmt: skip
        out.append(Piece(bucket, max(bucket, first_ms), min(ends, end_ms), kind))
        bucket = ends
    return tuple(out)


def published_by(now_ms: int, lateness_ms: int) -> int:
    """Derived windows ending by then have been published (their final rows go out at end + lateness), with
    FINAL_SLACK_MS for their publication and ingestion."""
    return now_ms - lateness_ms - FINAL_SLACK_MS


def by_level(levels: Sequence[Level], lo: int, hi: int, complete: Mapping[str, int]) -> list[tuple[Level, int, int]]:
    """[lo, hi) cut between the levels: the coarsest takes the whole windows of its own that lie in it and are
    complete (complete[name]: every window of that level ending by then is in Pinot), the finer ones what is
    left before and after, recursively; the finest level, folded from events, takes whatever remains. lo is a
    window boundary of the finest level. (The finest may be the same roll-up as the one before it, in another
    table: a history roll-up's open windows in the recent tier.)"""
    if hi <= lo:
        return []
    head, rest = levels[0], levels[1:]
    if not rest:
        return [(head, lo, hi)]
    size = head.size_ms
    a = -(-lo // size) * size
    b = min(hi, complete.get(head.name, lo))
    b -= b % size
    if a >= b:
        return by_level(rest, lo, hi, complete)
    return [*by_level(rest, lo, a, complete), (head, a, b), *by_level(rest, b, hi, complete)]


# A roll-up's span of at most this many windows is read as `"window_start" IN (<each window's start>)`: Pinot 0.11
# answers a range on a consuming segment (no range index there) by scanning every row, once per range of an OR,
# and an IN list from the inverted index on window_start (a few distinct values per segment); a committed segment
# is sorted on window_start either way (docs/benchmarks.md, "Stitched statements that scan nothing").
LISTED_MAX = 180


def spans_condition(spans: Iterable[tuple[Level, int, int]], listed: bool = False) -> str:
    """The WHERE part of a chain's roll-ups over these (level, lo, hi) of one table: adjacent spans of a level
    as one range; listed: a range of a roll-up of at most LISTED_MAX windows as the list of the starts in it (lo
    is a window boundary of its level; the windows starting before hi are read either way), and the raw events'
    ranges (raw_level: time ranges alone) each with the list of its buckets where there are at most LISTED_MAX
    in all. Names are configured roll-up names (lower-case identifiers, checked by the pipeline's
    settings)."""
    merged: dict[Level, list[list[int]]] = {}
    for level, lo, hi in sorted(spans, key=lambda s: s[1]):
        ranges = merged.setdefault(level, [])
        if ranges and ranges[-1][1] == lo:
            ranges[-1][1] = hi
        else:
            ranges.append([lo, hi])
    parts = [_level_condition(level, ranges, listed) for level, ranges in merged.items()]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _level_condition(level: Level, ranges: list[list[int]], listed: bool) -> str:
    col, size = level.time, level.size_ms
    if listed and level.name and sum((hi - lo) // size for lo, hi in ranges) <= LISTED_MAX:
        starts = ", ".join(str(t) for lo, hi in ranges for t in range(lo, hi, size))
        return f'("rollup_name" = \'{level.name}\' AND ("{col}" IN ({starts})))'
    times = " OR ".join(f'("{col}" >= {lo} AND "{col}" < {hi})' for lo, hi in ranges)
    if level.name:
        return f"(\"rollup_name\" = '{level.name}' AND ({times}))"
    step = level.bucket_ms
    buckets = [range(lo - lo % step, hi, step) for lo, hi in ranges] if listed and step else []
    if buckets and sum(map(len, buckets)) <= LISTED_MAX:
        # each range after its own buckets: Pinot scans a range only over the rows the index left where they
        # are ANDed (one range of an OR over a list is a scan of the whole segment)
        parts = (f'("{level.bucket}" IN ({", ".join(map(str, starts))}) AND "{col}" >= {lo} AND "{col}" < {hi})'
                 for starts, (lo, hi) in zip(buckets, ranges, strict=True))  # fmt: skip
        return "(" + " OR ".join(parts) + ")"
    return f"({times})"


PROBE_WINDOWS = 3  # how far back the probe looks first for a derived roll-up's newest window, in its windows
DAY_MS = 86_400_000


def probe_text(table: str, levels: Iterable[Level], now_ms: int, since_ms: int | None = None) -> str:
    """The newest window in Pinot of each derived level: a window is complete once a later one is there (a merge
    shard publishes a window's final rows before the next one's). It looks back PROBE_WINDOWS windows from now
    (a live pipeline has published one of them), or with since_ms from then on (the day holding it: the data a
    stopped or backfilled pipeline left). Its bounds move once a window of the level (a day), so the cache keeps
    its text."""
    since = {lv: (now_ms - now_ms % lv.size_ms - PROBE_WINDOWS * lv.size_ms if since_ms is None
                  else since_ms - since_ms % DAY_MS) for lv in set(levels)}  # fmt: skip
    conds = " OR ".join(f'("rollup_name" = \'{lv.name}\' AND "window_start" >= {t})' for lv, t in sorted(since.items()))
    return f'SELECT "rollup_name", MAX("window_start") FROM {table} WHERE {conds} GROUP BY "rollup_name" LIMIT 1000'


def probed(rows: Iterable[Sequence[Any]]) -> dict[str, int]:
    """The probe's answer: per level, the time up to which its windows are complete (its newest window's start)."""
    return {str(name): int(float(start)) for name, start in rows if start is not None}


def ttl_of(piece: Piece, open_ttl_s: float) -> float:
    """How long a piece's rows are kept: one refresh while open, longer once only late events change it. The
    longer TTLs are spread over up to twice their length by the piece's bucket, so that the pieces read
    together by a cold refresh do not all expire at the same refresh ever after."""
    if piece.kind == "open":
        return open_ttl_s
    spread = 1 + (piece.bucket // 1000 % 7) / 7
    return max((FINAL_TTL_S if piece.kind == "final" else SETTLED_TTL_S) * spread, open_ttl_s)


@dataclass(frozen=True, slots=True)
class Stitch:
    """How one roll-up panel is read in pieces. Its statements (one per table of its levels) are `head` (SELECT
    <time> AS .., <group columns>, <measures> FROM) and the table, WHERE the filters and the pieces' roll-ups and
    time ranges, then `tail` (GROUP BY ..); every row starts with a time that lies in its piece's bucket (the
    piece's bucket itself, or the series' bucket, which divides it)."""

    key: str  # the panel across time (Sql.key) and the shape of its statement
    head: str  # SELECT .. FROM (the table follows: each level's)
    filters: tuple[str, ...]  # the filters' conditions
    tail: str
    groups: int  # group columns after the time
    measures: tuple[Measure, ...]
    shape: Shape  # one row (totals), top values by the first measure, or a series (time kept, in order)
    limit: int  # top: the values shown
    size_ms: int  # the piece size
    pieces: tuple[Piece, ...]
    levels: tuple[Level, ...]  # the chosen roll-up, then the finer ones down to one published while open
    published: int  # final-only windows ending by then are published (published_by)
    now_ms: int
    theta_lg_k: int = 12

    def piece_key(self, piece: Piece) -> str:
        return repr((self.key, self.size_ms, piece.lo, piece.hi))

    @property
    def derived(self) -> tuple[Level, ...]:
        """The levels whose windows are published once final only, the probe asks how far: not a roll-up's tier
        table before its live table, which answers for as long as it keeps the windows (the tier's table holds
        them once final, and a window older than that is final unless the pipeline is further behind than the live
        table keeps, when no table holds it)."""
        return tuple(lv for lv, finer in itertools.pairwise(self.levels) if lv.name != finer.name)

    def texts(self, wanted: Sequence[Piece], complete: Mapping[str, int] | None = None) -> tuple[str, ...]:
        """The statements reading these pieces, each from the coarsest level published there (complete: the
        probe's answer; without it, by the time alone), adjacent ones as one range: one per table, coarsest
        first."""
        bounds = {lv.name: min(self.published, (complete or {}).get(lv.name, self.published)) for lv in self.derived}
        if complete is not None:
            bounds = {name: t if name in complete else -(2**62) for name, t in bounds.items()}
        for coarse, fine in itertools.pairwise(self.levels):
            if coarse.name == fine.name:  # the same roll-up in the live table: read there while it keeps it
                bounds[coarse.name] = min(self.published, live_from(self.now_ms, fine.kept_ms))
            # what the finer table dropped: the coarser one
            bounds[coarse.name] = max(bounds[coarse.name], self.now_ms - fine.kept_ms)
        spans = [span for p in wanted for span in by_level(self.levels, p.lo, p.hi, bounds)]
        limit = len(wanted) if self.shape == "one" else MAX_ROWS  # totals: a row per piece
        out = []
        for table in dict.fromkeys(lv.table for lv in self.levels):
            mine = [span for span in spans if span[0].table == table]
            if mine:
                where = " AND ".join([*self.filters, spans_condition(mine, listed=True)])
                out.append(f"{self.head} {table} WHERE {where}{self.tail} LIMIT {limit}")
        return tuple(out)

    def cut(self, rows: Rows) -> bool:
        """Whether a statement's answer may lack rows: as many as its LIMIT (texts), past which Pinot left the rest
        out (raw events' values are not capped as a roll-up's are)."""
        return self.shape != "one" and len(rows) >= MAX_ROWS

    def split(self, rows: Rows, wanted: Sequence[Piece]) -> dict[Piece, list[tuple[Any, ...]]]:
        """The rows of a statement for `wanted`, by piece (every piece present, with no rows if none)."""
        by_bucket: dict[int, list[tuple[Any, ...]]] = {p.bucket: [] for p in wanted}
        for row in rows:
            t = int(float(row[0]))
            found = by_bucket.get(t - t % self.size_ms)
            if found is not None:
                found.append(tuple(row))
        return {p: by_bucket[p.bucket] for p in wanted}

    def merge(self, parts: Iterable[Rows]) -> tuple[tuple[Any, ...], ...]:
        """The panel's rows from its pieces' rows, shaped as the one statement over the whole range answers."""
        width = (1 if self.shape == "series" else 0) + self.groups
        acc: dict[tuple[Any, ...], list[list[Any]]] = {}
        for rows in parts:
            for row in rows:
                group = tuple(row[1 : 1 + self.groups])
                if self.shape == "series":  # the bucket is part of the row
                    group = (int(float(row[0])), *group)
                values = row[1 + self.groups :]
                slots = acc.get(group)
                if slots is None:
                    slots = acc[group] = [[] for _ in self.measures]
                for slot, value in zip(slots, values, strict=True):
                    slot.append(value)
        out = [(*group, *(self._final(m, v) for m, v in zip(self.measures, slots, strict=True)))
               for group, slots in acc.items()]  # fmt: skip
        if self.shape == "one":
            empty: tuple[Any, ...] = tuple(0.0 if m == "sum" else 0 if m == "theta" else None for m in self.measures)
            return (out[0] if out else empty,)
        if self.shape == "top":
            out.sort(key=lambda r: (-float(r[width]), str(r[:width])))
            return tuple(out[: self.limit])
        out.sort(key=lambda r: (r[0], str(r[1:width])))
        return tuple(out)

    def _final(self, measure: Measure, values: list[Any]) -> Any:
        if measure == "sum":
            return float(sum(float(v) for v in values if v is not None))
        if measure == "theta":
            union = ds.theta_union(self.theta_lg_k)
            for v in values:
                if v:
                    union.update(ds.compact_theta_sketch.deserialize(base64.b64decode(v)))
            return round(union.get_result().get_estimate())
        p95 = tdigest_quantile([bytes.fromhex(v) for v in values if v], 0.95)
        return None if p95 is None else float(p95)
