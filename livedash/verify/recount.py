"""`livedash verify`: recount the raw events straight from Kafka and compare with what Pinot holds. Pure logic.

Independent of the dataflow's code (only the contract's validator and the marker format are shared, since
they define what an event is): plain dictionaries, one event at a time, in each partition's offset order.

What the dataflow must have produced, per roll-up window and dimension values, summed over source partitions:
- Every valid event counts once. Which events were late is replayed from the partition itself: the
  watermark is the highest event time (or watermark marker) read so far, and a window is closed once the
  watermark minus the allowed lateness reaches its end. On-time events land in window rows, whose dimension
  values went through the caps; late events land in correction rows with their own values.
- Caps: within one pane of one partition a value either has its own row for all its events or is folded into
  "__other__" for all of them, so the values a pane admitted are read from Pinot's rows of that pane; verify
  checks there are no more than the cap and maps the recount through them.
- Duplicates: replayed by SeenIds, the rule of docs/events.md written apart from the dataflow's.
- Exact: count, and per metric sum, count, min, max. Within stated bounds: distinct users (Theta, lg_k 12:
  exact below 4096 entries; above, the estimate within z relative standard errors, 1/sqrt(k) each, where z
  holds all of a roll-up's estimated groups at once at 99.9% confidence, see theta_z) and, for the busiest
  groups, p50/p95 of the merged KLL sketches (twice KLL's normalised rank error at 99%).

On a live system: only windows that are due are compared, closed by the watermark of every partition of the
topic as the recount leaves it (an open window may still gain events, in any partition), and final in Pinot
(the dataflow may be behind the recount); the others are reported as still open. Late corrections of events
the recount did not read are left out: a correction row holds one partition's late events of one window and
group that met its watermark within one block (windows.late_block_s), and one whose version says it holds an
offset at or past the recount's end is left out on both sides (`overrun`: Pinot names such rows by key).
Windows older than their tier keeps are skipped.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from statistics import NormalDist
from typing import Any

import datasketches as ds

from livedash.pipeline.aggregates import TDIGEST_CENTROIDS, tdigest_quantile
from livedash.pipeline.contract import Validator
from livedash.pipeline.marker import MARKER_KEY, parse_marker
from livedash.pipeline.rows import DBL_MAX, OTHER, key_parts, late_block, primary_key
from livedash.pipeline.settings import PipelineSettings, Rollup

GroupKey = tuple[str, int, tuple[str, ...]]  # roll-up, window start, dimension values


@dataclass(slots=True)
class Tally:
    """Exact aggregates of one group, and what the sketches are checked against."""

    count: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    mins: dict[str, float] = field(default_factory=dict)
    maxs: dict[str, float] = field(default_factory=dict)
    users: set[str] = field(default_factory=set)
    quantiles: list[float] = field(default_factory=list)

    def add(self, event: Any, metrics: tuple[str, ...], distinct: str, quantile: str) -> None:
        self.count += 1
        for m in metrics:
            v = getattr(event, m)
            if v is None:
                continue
            v = float(v)
            self.sums[m] = self.sums.get(m, 0.0) + v
            self.counts[m] = self.counts.get(m, 0) + 1
            self.mins[m] = min(self.mins.get(m, v), v)
            self.maxs[m] = max(self.maxs.get(m, v), v)
            if m == quantile:
                self.quantiles.append(v)
        user = getattr(event, distinct)
        if user is not None:
            self.users.add(user)


class SeenIds:
    """The duplicate rule of docs/events.md, replayed one event at a time (written apart from the dataflow's
    bulk version in livedash/pipeline/dedup.py, which must agree with it): an event_id is remembered in the
    bucket of its event's time (buckets of a tenth of the horizon, at least 1 s); a bucket is forgotten once
    the watermark minus the horizon has passed its end, or, past max_ids remembered, oldest first."""

    def __init__(self, horizon_ms: int, max_ids: int) -> None:
        self.horizon_ms = horizon_ms
        self.width = max(1000, horizon_ms // 10)
        self.max_ids = max_ids
        self.bucket_of: dict[str, int] = {}  # id -> bucket it was remembered in (forgotten when <= cutoff)
        self.sizes: dict[int, int] = defaultdict(int)  # bucket -> ids remembered in it
        self.cutoff = -(2**62)

    def is_duplicate(self, event_id: str) -> bool:
        b = self.bucket_of.get(event_id)
        return b is not None and b > self.cutoff

    def remember(self, event_id: str, ts: int, watermark: int) -> None:
        """A kept event; watermark: the partition's, with this event."""
        b = ts // self.width
        if b > self.cutoff:
            self.bucket_of[event_id] = b
            self.sizes[b] += 1
        self.watermark_at(watermark)
        while sum(self.sizes.values()) > self.max_ids:
            self._forget(min(self.sizes))

    def watermark_at(self, watermark: int) -> None:
        cut = (watermark - self.horizon_ms) // self.width - 1
        for b in [b for b in self.sizes if b <= cut]:
            self._forget(b)
        self.cutoff = max(self.cutoff, cut)

    def _forget(self, bucket: int) -> None:
        del self.sizes[bucket]
        self.cutoff = max(self.cutoff, bucket)


@dataclass(slots=True)
class _Partition:
    watermark: int | None = None
    messages: int = 0
    invalid: int = 0
    duplicates: int = 0
    seen: SeenIds | None = None


@dataclass(slots=True)
class Found:
    """One group as Pinot answers it (summed over partitions and row kinds)."""

    count: int
    metrics: dict[str, tuple[float, int, float, float]]  # sum, count, min, max
    distinct: float
    final: bool  # every row of the group is final


class Recount:
    """Feed every raw message of each partition in offset order, then ask for the expected groups. expect()
    names every partition of the topic (one without messages holds every window open)."""

    def __init__(self, settings: PipelineSettings) -> None:
        self.settings = settings
        self.validator = Validator(settings.events)
        self.metrics = tuple(settings.events.metrics)
        self.distinct = settings.sketches.distinct_field
        self.quantile = settings.sketches.quantile_field
        self.lateness_ms = int(settings.windows.allowed_lateness_s * 1000)
        self.partitions: dict[int, _Partition] = defaultdict(_Partition)
        # On time: roll-up -> (pane start, partition, raw dims, first window) -> Tally of the events that met the
        # windows first window, first window + pane, ..., pane start open (every window of their pane, unless
        # some closed before a late event: a sliding window closed before it must not count it, its correction
        # row does). One tally per pane, not per window: a 5-minute window sliding by 10 s would add each event
        # 30 times. Windows are expanded and caps applied at compare time.
        # Derived roll-ups (the cascade) have none: their windows hold the finer roll-up's on-time events, mapped
        # at compare time from the roll-up they are built from (settings.root_of).
        self.on_time: dict[str, dict[tuple[int, int, tuple[str, ...], int], Tally]] = {
            r.name: defaultdict(Tally) for r in settings.rollups if r.derived_from is None
        }
        # Late: (partition, block of its watermark) -> (roll-up, window start, raw dims) -> Tally, per window the
        # event missed: the dataflow's correction rows, one per block
        self.late: dict[tuple[int, int], dict[GroupKey, Tally]] = defaultdict(lambda: defaultdict(Tally))
        self.late_block_ms = int(settings.windows.late_block_s * 1000)
        # Late for a roll-up's window is late for the windows derived from it: (name, window size) of those
        derived: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for r in settings.rollups:
            if r.derived_from is not None:
                derived[settings.root_of(r).name].append((r.name, r.window.size_s * 1000))
        self._rollups = [(r.name, r.window.size_s * 1000, r.window.pane_s * 1000, attrgetter(*r.dimensions),
                          len(r.dimensions) == 1, derived[r.name])
                         for r in settings.rollups if r.derived_from is None]  # fmt: skip
        self.valid = 0
        self.late_events = 0
        self.dedup_horizon_ms = int(settings.dedup.horizon_s * 1000)
        self.known: set[int] = set()  # every partition of the topic (expect); empty: those fed
        self.ends: dict[int, int] = {}  # partition -> the first offset the recount did not read

    def expect(self, ends: Mapping[int, int]) -> None:
        """The topic's partitions and the offsets the scan stops at (exclusive)."""
        self.known = set(ends)
        self.ends = dict(ends)

    def feed(self, partition: int, key: bytes | None, value: bytes | None, kafka_ts: int) -> None:
        part = self.partitions[partition]
        part.messages += 1
        if part.seen is None and self.dedup_horizon_ms > 0:
            part.seen = SeenIds(self.dedup_horizon_ms, self.settings.dedup.max_ids)
        if key == MARKER_KEY:
            wm = parse_marker(value)
            if wm is None:
                part.invalid += 1
            elif part.watermark is not None and wm > part.watermark:
                part.watermark = wm  # like the dataflow: a marker only moves a partition that has seen events
                if part.seen is not None:
                    part.seen.watermark_at(wm)
            return
        event = self.validator.parse(value, kafka_ts)
        if isinstance(event, str):
            part.invalid += 1
            return
        if part.seen is not None and part.seen.is_duplicate(event.event_id):
            part.duplicates += 1
            return
        self.valid += 1
        ts = event.ts
        if part.watermark is None or ts > part.watermark:
            part.watermark = ts
        if part.seen is not None:
            part.seen.remember(event.event_id, ts, part.watermark)
        horizon = part.watermark - self.lateness_ms
        was_late = False
        metrics, distinct, quantile = self.metrics, self.distinct, self.quantile
        late = self.late[(partition, late_block(part.watermark, self.late_block_ms))]  # the watermark it met
        for name, size, pane, dims_of, single, derived in self._rollups:
            pane_start = ts - ts % pane
            raw = (dims_of(event),) if single else dims_of(event)
            closed_upto = horizon - horizon % pane
            first = pane_start - size + pane  # the first window holding this pane
            first_open = max(first, closed_upto - size + pane)  # windows ending at or before closed_upto closed
            for ws in range(first, min(first_open, pane_start + pane), pane):
                late[(name, ws, raw)].add(event, metrics, distinct, quantile)
                was_late = True
                for d_name, d_size in derived:  # a derived roll-up's source is tumbling: one window here
                    late[(d_name, ts - ts % d_size, raw)].add(event, metrics, distinct, quantile)
            if first_open <= pane_start:
                self.on_time[name][(pane_start, partition, raw, first_open)].add(event, metrics, distinct, quantile)
        self.late_events += was_late

    def due(self, rollup: Rollup, window_start: int) -> bool:
        """Closed by every partition's watermark (so no on-time event can join it any more, and the dataflow
        has made its final rows once it has read as far as the recount)."""
        end = window_start + rollup.window.size_s * 1000
        for p in self.known or self.partitions:
            wm = self.partitions[p].watermark if p in self.partitions else None
            if wm is None or wm - self.lateness_ms < end:
                return False
        return True

    @property
    def invalid(self) -> int:
        return sum(p.invalid for p in self.partitions.values())

    @property
    def duplicates(self) -> int:
        return sum(p.duplicates for p in self.partitions.values())

    def expected(
        self,
        rollup: Rollup,
        start_ms: int,
        end_ms: int,
        admitted: Mapping[tuple[int, int, int], set[str]],
        overrun: Collection[str] = (),
    ) -> dict[GroupKey, Tally]:
        """The groups Pinot must hold for windows of this roll-up starting in [start_ms, end_ms) that are due.

        admitted: (pane start, partition, dimension index) -> the values Pinot's window rows of that pane show;
        a value not among them was folded into "__other__" (only for tumbling roll-ups: sliding rows merge
        panes, so their caps cannot be read back and are compared on window totals instead). For a derived
        roll-up, those of the roll-up it is built from (settings.root_of), whose capped groups its windows sum.

        overrun: the keys (pk) of the correction rows Pinot's side leaves out because they hold offsets past the
        recount's end: their late events that the recount read are left out here too."""
        size = rollup.window.size_s * 1000
        pane = rollup.window.pane_s * 1000
        out: dict[GroupKey, Tally] = defaultdict(Tally)
        tumbling = size == pane
        due: dict[int, bool] = {}
        root = self.settings.root_of(rollup)  # itself, unless derived
        root_pane = root.window.pane_s * 1000
        for (pane_start, partition, raw, first_open), tally in self.on_time[root.name].items():
            dims = raw
            if tumbling:
                dims = tuple(
                    v if v in admitted.get((pane_start, partition, i), ()) else OTHER for i, v in enumerate(raw)
                )
            for ws in range(first_open, pane_start + 1, root_pane):
                if root is not rollup:
                    ws -= ws % size  # the derived window holding the finer (tumbling) one
                if not start_ms <= ws < end_ms:
                    continue
                if ws not in due:
                    due[ws] = self.due(rollup, ws)
                if due[ws]:
                    _merge(out[(rollup.name, ws, dims)], tally)
        skip = set(overrun)
        for (partition, block), late in self.late.items():
            for (name, ws, raw), tally in late.items():
                if name != rollup.name or not start_ms <= ws < end_ms or not self.due(rollup, ws):
                    continue
                if skip and correction_key(name, ws, raw, partition, block, self.late_block_ms) in skip:
                    continue
                _merge(out[(name, ws, raw)], tally)
        return out


def correction_key(rollup: str, ws: int, dims: tuple[str, ...], partition: int, block: int, block_ms: int) -> str:
    """The primary key of the dataflow's correction row for these late events (livedash.pipeline.rows)."""
    return primary_key(key_parts(rollup, ws, dims, partition, (block, block_ms))).decode()


def _merge(into: Tally, part: Tally) -> None:
    into.count += part.count
    for m, v in part.sums.items():
        into.sums[m] = into.sums.get(m, 0.0) + v
        into.counts[m] = into.counts.get(m, 0) + part.counts[m]
        into.mins[m] = min(into.mins.get(m, part.mins[m]), part.mins[m])
        into.maxs[m] = max(into.maxs.get(m, part.maxs[m]), part.maxs[m])
    into.users |= part.users
    into.quantiles += part.quantiles


def totals(groups: Mapping[GroupKey, Any], count: Any) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = defaultdict(int)
    for (name, ws, _), g in groups.items():
        out[(name, ws)] += count(g)
    return out


@dataclass
class Report:
    compared: int = 0
    equal: int = 0
    different: int = 0
    missing: int = 0
    extra: int = 0
    pending_windows: int = 0  # still open by the recount's watermarks
    unfinished_windows: int = 0  # closed by the recount, not final in Pinot yet (the dataflow is behind)
    skipped_rollups: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, other: Report) -> None:
        for name in ("compared", "equal", "different", "missing", "extra", "pending_windows", "unfinished_windows"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped_rollups += other.skipped_rollups
        for problem in other.problems:
            self.note(problem)

    def note(self, problem: str) -> None:
        if len(self.problems) < 1000:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        """Something compared and all of it exact, and no window closed by the recount still lacks its final
        rows in Pinot (verify_run looks again for a while first: on a live system the dataflow is a moment
        behind the recount)."""
        return self.compared > 0 and not (self.different or self.missing or self.extra or self.unfinished_windows)

    @property
    def open_windows(self) -> int:
        return self.pending_windows + self.unfinished_windows

    def summary(self) -> str:
        return (f"{self.compared} groups compared: {self.equal} equal, {self.different} different, "
                f"{self.missing} missing, {self.extra} extra; {self.open_windows} windows not final yet, left "
                f"out ({self.pending_windows} still open for the recount, {self.unfinished_windows} not final in "
                "Pinot yet)")  # fmt: skip


FAMILY_CONFIDENCE = 0.999  # all of a roll-up's estimated distinct counts at once


def theta_z(groups: int) -> float:
    """Standard errors that hold `groups` estimates at once with FAMILY_CONFIDENCE (Bonferroni): 3.3 for one
    group, 4.4 for 100, 5.3 for 10,000. A fixed 3 (99.7% each) failed by chance on correct data: with
    hundreds of groups compared, one beyond 3 is expected."""
    return NormalDist().inv_cdf(1 - (1 - FAMILY_CONFIDENCE) / (2 * max(1, groups)))


def distinct_bound(exact: int, lg_k: int, z: float = 3.0) -> float:
    k = 2**lg_k
    return 0.0 if exact < k else z * exact / math.sqrt(k)  # exact below k entries; z standard errors above


def check_group(key: GroupKey, want: Tally, got: Found, metrics: Iterable[str], lg_k: int, z: float = 3.0) -> list[str]:
    out = []
    if got.count != want.count:
        out.append(f"{key}: count {got.count} != {want.count}")
    for m in metrics:
        s, c, lo, hi = got.metrics[m]
        wc = want.counts.get(m, 0)
        if c != wc:
            out.append(f"{key}: {m} count {c} != {wc}")
        if not math.isclose(s, want.sums.get(m, 0.0), rel_tol=1e-9, abs_tol=1e-6):
            out.append(f"{key}: {m} sum {s} != {want.sums.get(m, 0.0)}")
        if wc and (lo != want.mins[m] or hi != want.maxs[m]):
            out.append(f"{key}: {m} min/max {lo}/{hi} != {want.mins[m]}/{want.maxs[m]}")
        if not wc and (lo != DBL_MAX or hi != -DBL_MAX):
            out.append(f"{key}: {m} min/max {lo}/{hi} without values")
    exact = len(want.users)
    bound = distinct_bound(exact, lg_k, z)
    if not math.isnan(got.distinct) and abs(got.distinct - exact) > bound:
        out.append(f"{key}: distinct users {got.distinct:.0f} vs {exact} (bound {bound:.0f}, {z:.1f} sigma)")
    return out


def quantile_bound(k: int, n: int) -> float:
    """The rank error a pooled p50 or p95 may have: twice KLL's normalised rank error (the rows' t-digests are
    read from the dataflow's KLL sketches), two of a digest's 100 centroids (its own resolution) and one item of
    the n."""
    return 2 * ds.kll_doubles_sketch.get_normalized_rank_error(k, False) + 2 / TDIGEST_CENTROIDS + 1 / n


def rank_miss(values: Sequence[float], q: float, estimate: float, bound: float) -> str | None:
    """Why `estimate` is no q-quantile of the sorted values within `bound` of rank, or None if it is. Values
    within a float's rounding of the estimate count as equal to it: a digest keeps its means as 32-bit floats
    (tdigest_bytes), so an estimate of 113.4 reads 113.40000153 and fell above both of two 113.4s at the
    median, which put its rank an item and a half off for a group of 16 (seen once in CI, in 14 of 40,000
    quantiles of small groups)."""
    tol = abs(estimate) * 2.0**-23  # twice a float32's largest relative rounding error
    lo = bisect.bisect_left(values, estimate - tol) / len(values)
    hi = bisect.bisect_right(values, estimate + tol) / len(values)
    if lo - bound <= q <= hi + bound:
        return None
    return f"p{int(q * 100)} {estimate} has true rank [{lo:.3f}, {hi:.3f}], bound {bound:.3f}"


def check_quantiles(key: GroupKey, want: Tally, tdigest_hex: Iterable[str], k: int) -> list[str]:
    """p50 and p95 of the rows' t-digests pooled (as the dashboard pools them) within quantile_bound."""
    if not want.quantiles:
        return []
    values = sorted(want.quantiles)
    n = len(values)
    eps = quantile_bound(k, n)
    try:
        digests = [bytes.fromhex(hexed) for hexed in tdigest_hex]
        estimates = [(q, tdigest_quantile(digests, q)) for q in (0.5, 0.95)]
    except ValueError as exc:  # a row Pinot holds that is no t-digest: a difference to report, not a crash
        return [f"{key}: a row's quantile_tdigest is unreadable ({exc})"]
    out = []
    for q, est in estimates:
        if est is None:
            out.append(f"{key}: p{int(q * 100)}: no t-digest holds a value, {n} events carry one")
        elif (miss := rank_miss(values, q, est, eps)) is not None:
            out.append(f"{key}: {miss}")
    return out


def admitted_values(
    window_rows: Iterable[tuple[int, int, tuple[str, ...]]],
) -> dict[tuple[int, int, int], set[str]]:
    """(pane start, partition, dimension index) -> values with their own rows, from (window start, source
    partition, dimension values) of a tumbling roll-up's window rows."""
    out: dict[tuple[int, int, int], set[str]] = defaultdict(set)
    for ws, partition, dims in window_rows:
        for i, v in enumerate(dims):
            if v != OTHER:
                out[(ws, partition, i)].add(v)
    return out


def compare_rollup(
    report: Report,
    recount: Recount,
    rollup: Rollup,
    start_ms: int,
    end_ms: int,
    window_rows: Iterable[tuple[int, int, tuple[str, ...]]],
    found: Mapping[GroupKey, Found],
    overrun: Collection[str] = (),
) -> dict[GroupKey, Tally]:
    """Compare one roll-up's groups over [start_ms, end_ms); returns the expected groups that were compared.
    overrun: see Recount.expected."""
    settings = recount.settings
    tumbling = rollup.window.every_s is None
    caps = [settings.events.dimensions[d] for d in rollup.dimensions]
    admitted = admitted_values(window_rows) if tumbling else {}
    for (ws, partition, i), values in admitted.items():
        if len(values) > caps[i]:
            report.different += 1
            report.note(f"{rollup.name} window {ws} partition {partition}: {len(values)} values of "
                        f"{rollup.dimensions[i]} have their own rows, over the cap of {caps[i]}")  # fmt: skip
    want = recount.expected(rollup, start_ms, end_ms, admitted, overrun)
    got = {k: v for k, v in found.items() if k[0] == rollup.name and start_ms <= k[1] < end_ms}
    pending = {ws for (_, ws, _) in got if not recount.due(rollup, ws)}
    unfinished = {ws for (_, ws, _), f in got.items() if not f.final and ws not in pending}
    report.pending_windows += len(pending)
    report.unfinished_windows += len(unfinished)
    for ws in sorted(unfinished)[:5]:
        report.note(f"{rollup.name} window {ws}: closed in every partition of the recount but not final in Pinot "
                    "(the dataflow is behind, or its final rows were lost)")  # fmt: skip
    got = {k: v for k, v in got.items() if k[1] not in pending and k[1] not in unfinished}
    want = {k: v for k, v in want.items() if k[1] not in unfinished}
    if not tumbling:  # caps of merged panes cannot be read back: windows with "__other__" compare as totals
        folded = {ws for (_, ws, dims) in got if OTHER in dims}
        want, got = _collapse(want, folded), _collapse_found(got, folded)
    k = 2**settings.sketches.theta_lg_k
    z = theta_z(sum(1 for t in want.values() if len(t.users) >= k))
    for key in sorted(set(want) | set(got)):
        report.compared += 1
        if key not in got:
            report.missing += 1
            report.note(f"{key}: missing in Pinot (expected count {want[key].count})")
        elif key not in want:
            report.extra += 1
            report.note(f"{key}: in Pinot (count {got[key].count}) but no event of the recount belongs there")
        else:
            problems = check_group(key, want[key], got[key], recount.metrics, settings.sketches.theta_lg_k, z)
            if problems:
                report.different += 1
                for problem in problems:
                    report.note(problem)
            else:
                report.equal += 1
    return want


def _collapse(groups: Mapping[GroupKey, Tally], windows: set[int]) -> dict[GroupKey, Tally]:
    out: dict[GroupKey, Tally] = {}
    for (name, ws, dims), tally in groups.items():
        if ws in windows:
            _merge(out.setdefault((name, ws, ("*",)), Tally()), tally)
        else:
            out[(name, ws, dims)] = tally
    return out


def _collapse_found(groups: Mapping[GroupKey, Found], windows: set[int]) -> dict[GroupKey, Found]:
    out: dict[GroupKey, Found] = {}
    for (name, ws, dims), f in groups.items():
        if ws not in windows:
            out[(name, ws, dims)] = f
            continue
        key = (name, ws, ("*",))
        have = out.get(key)
        if have is None:
            out[key] = Found(f.count, dict(f.metrics), f.distinct, f.final)
            continue
        have.count += f.count
        for m, (s, c, lo, hi) in f.metrics.items():
            hs, hc, hlo, hhi = have.metrics[m]
            have.metrics[m] = (hs + s, hc + c, min(hlo, lo), max(hhi, hi))
        have.distinct = math.nan  # no union of the parts' sketches here: not checked
        have.final = have.final and f.final
    return out
