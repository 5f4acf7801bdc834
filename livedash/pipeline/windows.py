"""Per-partition event-time windowing: panes, watermark, provisional and final rows, late corrections. Pure.

One `PartitionWindows` holds the state of one Kafka source partition. Nothing is shared across partitions:
each partition has its own watermark (the highest event time it has seen), so a quiet partition stalls no
other, and Pinot merges the partitions' rows at query time (sums, min/max, sketch unions).

Rows (livedash.pipeline.rows: their columns, primary key and version) carry a primary key, a digest of
  [rollup, window_start, dimension values..., source partition]
and a version that grows with the input: 2 * (highest source offset folded into the row) + is_final. A replay
of the same offsets re-publishes rows with the same versions, so Pinot's upsert never regresses.

An event whose window is already final is late: it is published once to the late topic and counted through
additive correction rows (kind "late"): one per window, group and block of the partition's watermark
(windows.late_block_s), holding the late events that met a watermark in the block, re-published every
windows.late_publish_every_s while the block gains some (version 2 * its highest offset + 1).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from typing import Any, NamedTuple, cast

import orjson

from livedash.pipeline.aggregates import Agg, Gains, SketchParams, pack_state, unpack_state
from livedash.pipeline.cascade import Cascade
from livedash.pipeline.contract import Event, dimension_values, event_time
from livedash.pipeline.rows import ALL, MISSING, OTHER, SOURCES, Row, key_parts, late_block, primary_key, version
from livedash.pipeline.settings import PipelineSettings, Rollup

ROUTE_CACHE_MAX = 65_536  # raw dimension tuples remembered per pane (beyond, the caps are applied per event)
POPULARITY_DECAY = 0.5  # per retired pane: a value's popularity halves every pane it is not seen in
POPULARITY_KEEP = 4  # values remembered per dimension: this many times its cap


Group = Agg | Gains  # a pane's group: an Agg, or in phase one of the two-phase merge what it gained (Gains)


@dataclass(slots=True)
class Pane:
    groups: dict[tuple[str, ...], Group] = field(default_factory=dict)
    admitted: list[set[str]] = field(default_factory=list)  # per roll-up dimension, values under the cap
    dirty: set[tuple[str, ...]] = field(default_factory=set)
    # raw dimension values (None = absent) -> [their group after caps, events seen]: one dict lookup per event
    # on the hot path, and the counts that rank values for later panes' caps
    route: dict[tuple[str | None, ...], list[Any]] = field(default_factory=dict)
    retired: bool = False  # its counts went into the roll-up's popularity


@dataclass(slots=True, frozen=True)
class LateEvent:
    offset: int
    reason: str


class Partial(NamedTuple):
    """What one group of one pane gained in one source partition since the last tick (Agg.drain's form)."""

    rollup: int  # index into the pipeline's roll-ups
    pane_start: int
    # The partition's closed_upto when these gains were drained: they count for the pane's windows ending
    # after it only (in a sliding roll-up an event can be late for the pane's first windows, which got a
    # correction row, and on time for its later ones). None: for every window of the pane.
    after: int | None
    dims: tuple[str, ...]
    state: tuple[Any, ...]


class PartialsOut(NamedTuple):
    """One tick of one source partition for the merge."""

    partition: int
    watermark: int | None
    closed_upto: list[int | None]  # per roll-up: every window ending at or before it is closed here
    partials: list[Partial]


def next_slot(now_ms: int, every_ms: int, delay_ms: int = 0) -> int:
    """The wall-clock time of the next slot after now: slots every every_ms, delay_ms after its multiples. Phase
    one drains a slow tier's gains at the multiples and the merge shards publish them delay_ms later, so the
    gains of every partition arrive in time whatever the processes (they share the wall clock)."""
    return ((now_ms - delay_ms) // every_ms + 1) * every_ms + delay_ms


def _gather(agg: Group, event: Event, offset: int, touched: list[Group]) -> None:
    buf = agg.buf
    if not buf:
        touched.append(agg)
        pane, dims = agg.home
        pane.dirty.add(dims)
    buf.append(event)
    agg.buf_last = offset


def window_row(
    rollup: Rollup,
    role: str,
    dimensions: tuple[str, ...],
    ws: int,
    dims: tuple[str, ...],
    agg: Agg,
    kind: str,
    final: bool,
    partition: int,
    late: tuple[int, int] | None,
    row_version: int,
    sources: list[int] | None = None,
) -> Row:
    """A row of one window and group (livedash.pipeline.rows): per source partition here, merged across them in
    livedash.pipeline.merge (partition MERGED); late: a correction's (block's first offset, block size)."""
    pk = primary_key(key_parts(rollup.name, ws, dims, partition, late))
    by_name = dict(zip(rollup.dimensions, dims, strict=True))
    value: dict[str, Any] = {
        "pk": pk.decode(),
        "rollup_name": rollup.name,
        "window_start": ws,
        "window_end": ws + rollup.window.size_s * 1000,
        "source_partition": partition,
        SOURCES: [partition] if sources is None else sources,
        "kind": kind,
        **{d: by_name.get(d, ALL) for d in dimensions},
        **agg.fields(),
        "is_final": int(final),
        "version": row_version,
    }
    return Row(pk, orjson.dumps(value), role)


def kept(now_ms: int | None, ws: int, size_ms: int, keep_ms: int) -> bool:
    """Whether a table that keeps keep_ms still keeps the window starting at ws (no clock: every window)."""
    return now_ms is None or ws + size_ms >= now_ms - keep_ms


def also_live(row: Row, copy: bool) -> tuple[Row, ...]:
    """A final row or correction of a roll-up with running rows (PipelineSettings.has_running_rows), copy where
    the live table still keeps its window: to its own tier and to the live table, where it supersedes the
    running rows (the live table then holds the roll-up's last minutes whole, and the dashboard may read any
    window it keeps there)."""
    return (row, row._replace(role="live")) if copy else (row,)


class RollupWindows:
    """Panes and closing state of one roll-up in one partition."""

    def __init__(self, rollup: Rollup, caps: tuple[int, ...], retention_ms: int, publish_every_ms: int = 0,
                 final_only: bool = False, copies_to_live: bool = False,
                 live_ms: int | None = None) -> None:  # fmt: skip
        self.rollup = rollup
        self.publish_every_ms = publish_every_ms
        self.next_publish_ms = -(2**63)  # wall clock (PartitionWindows.now_ms) of its next provisional rows
        self.next_partials_ms = -(2**63)  # ... and of its next partials, for a tier that publishes less often
        self.role = rollup.role
        # PipelineSettings.has_running_rows: running rows to the live table, final rows and corrections to the
        # tier's and (copies_to_live) to the live one while it keeps the window
        self.copies_to_live = copies_to_live
        self.retention_ms = retention_ms
        self.live_ms = retention_ms if live_ms is None else live_ms  # how long its running rows are kept
        self.size_ms = rollup.window.size_s * 1000
        self.pane_ms = rollup.window.pane_s * 1000
        self.caps = caps
        names = rollup.dimensions
        getter: Callable[[Event], Any] = attrgetter(*names)  # one name: the value; several: a tuple
        self.dims_of: Callable[[Event], tuple[str | None, ...]] = (
            getter if len(names) > 1 else lambda event: (getter(event),)
        )
        self.panes: dict[int, Pane] = {}
        self.closed_upto: int | None = None  # every window ending at or before this is final
        self.popular: list[dict[str, float]] = [{} for _ in names]  # per dimension: value -> decayed events
        self.waiting: dict[int, set[tuple[str, ...]]] = {}  # sliding: changed groups of windows not yet current
        self.new_group: type[Agg] | type[Gains] = Agg  # Gains in phase one of the two-phase merge
        # A derived roll-up (livedash.pipeline.cascade) has no panes here: the cascade builds its windows from
        # this roll-up's final ones. An event late for this roll-up's window is late for each derived from it
        # (directly or not): (index, window size) of those.
        self.derived = rollup.derived_from is not None
        # Final only (PipelineSettings.final_only): no running rows. With the merge its gains still leave at its
        # tier's slots: phase one keeps a slot's items and values as they are (Gains), which over a whole window
        # would be every event's
        self.final_only = final_only
        self.late_too: list[tuple[int, int]] = []

    def window_starts(self, pane_start: int) -> range:
        """Starts of the windows containing the pane."""
        return range(pane_start - self.size_ms + self.pane_ms, pane_start + 1, self.pane_ms)

    def closed_count(self, starts: range) -> int:
        """How many of these window starts (ascending) are closed: windows close in order of their end."""
        if self.closed_upto is None:
            return 0
        limit = self.closed_upto - self.size_ms  # a window is closed when its start <= limit
        if limit < starts.start:
            return 0
        return min(len(starts), (limit - starts.start) // self.pane_ms + 1)

    def is_closed(self, window_start: int) -> bool:
        return self.closed_upto is not None and window_start + self.size_ms <= self.closed_upto

    def capped(self, pane: Pane, raw: tuple[str | None, ...]) -> tuple[str, ...]:
        """The group of these raw dimension values in this pane: values beyond a cap fold into OTHER."""
        out = []
        for i, value in enumerate(raw):
            if value is None:
                value = MISSING
            seen = pane.admitted[i]
            if value not in seen:
                if len(seen) < self.caps[i]:
                    seen.add(value)
                else:
                    value = OTHER
            out.append(value)
        return tuple(out)

    def new_pane(self, pane_start: int) -> Pane:
        """A pane whose caps admit the top values of the panes before it, then newcomers while room is left.

        Popularity is per dimension: the events each value had in earlier panes of this partition, halved for
        every later pane (so the ranking follows the traffic). It is updated when a pane is created, from the
        panes that start before it, so caps depend on the partition's input alone and a replay agrees.
        """
        for ps in sorted(ps for ps, pane in self.panes.items() if ps < pane_start and not pane.retired):
            self._retire(self.panes[ps])
        pane = self.panes[pane_start] = Pane()
        pane.admitted = [
            set(sorted(pop, key=lambda v: (-pop[v], v))[:cap]) for pop, cap in zip(self.popular, self.caps, strict=True)
        ]
        return pane

    def drop(self, pane_start: int) -> None:
        """Forget a pane no open window needs, its counts ranking values for the panes to come. Its groups point
        back at it (home): a cycle that only a full collection would free, which the dataflow's thresholds
        (GC_THRESHOLDS) make rare; it held every retired pane, growing memory by GBs an hour. Broken here, the
        pane goes by reference count at once."""
        pane = self.panes.pop(pane_start)
        if not pane.retired:
            self._retire(pane)
        for group in pane.groups.values():
            group.home = None

    def _retire(self, pane: Pane) -> None:
        pane.retired = True
        for pop in self.popular:
            for value in pop:
                pop[value] *= POPULARITY_DECAY
        for raw, (_, hits) in pane.route.items():
            for pop, got in zip(self.popular, raw, strict=True):
                key = MISSING if got is None else got
                pop[key] = pop.get(key, 0.0) + hits
        for i, (pop, cap) in enumerate(zip(self.popular, self.caps, strict=True)):
            if len(pop) > POPULARITY_KEEP * cap:
                self.popular[i] = dict(sorted(pop.items(), key=lambda kv: (-kv[1], kv[0]))[: POPULARITY_KEEP * cap])

    def group(self, pane_start: int, event: Event, params: SketchParams) -> Group:
        pane = self.panes.get(pane_start)
        if pane is None:
            pane = self.new_pane(pane_start)
        raw = self.dims_of(event)
        entry = pane.route.get(raw)
        if entry is not None:
            entry[1] += 1
            return entry[0]
        agg = self.group_of(pane, raw, params)
        if len(pane.route) < ROUTE_CACHE_MAX:
            pane.route[raw] = [agg, 1]
        return agg

    def group_of(self, pane: Pane, raw: tuple[str | None, ...], params: SketchParams) -> Group:
        dims = self.capped(pane, raw)
        agg = pane.groups.get(dims)
        if agg is None:
            agg = pane.groups[dims] = self.new_group(params)
            agg.home = (pane, dims)
        return agg


class PartitionWindows:
    def __init__(self, settings: PipelineSettings, partition: int, partials: bool = False) -> None:
        self.settings = settings
        self.partition = partition
        # partials=True: phase one of the two-phase merge (docs/architecture.md, issue 16). No window rows; each
        # call of partials() drains what every group gained since the last call, for the merge shards
        # (livedash.pipeline.merge) to fold into one row per window and group. Late corrections are as before.
        self.emit_partials = partials
        self.pending_partials: list[Partial] = []  # drained from panes dropped at a close, not yet sent
        self.lateness_ms = int(settings.windows.allowed_lateness_s * 1000)
        metrics = tuple(settings.events.metrics)
        s = settings.sketches
        self.params = SketchParams(metrics, s.distinct_field, s.quantile_field, s.theta_lg_k, s.kll_k)
        self.dimensions = settings.all_dimensions
        self.rollups = [
            RollupWindows(
                r,
                tuple(settings.events.dimensions[d] for d in r.dimensions),
                settings.retention_ms(r),
                settings.publish_every_ms(r),
                settings.final_only(r),
                settings.copies_to_live(r),
                settings.retention_ms_of("live"),
            )
            for r in settings.rollups
        ]
        if partials:
            for rw in self.rollups:
                rw.new_group = Gains
        for d, rollup in enumerate(settings.rollups):
            if rollup.derived_from is not None:
                root = settings.rollups.index(settings.root_of(rollup))
                self.rollups[root].late_too.append((d, rollup.window.size_s * 1000))
        self.folded = [rw for rw in self.rollups if not rw.derived]  # the roll-ups whose panes events go into
        # Without the merge, the derived roll-ups' windows are built here from this partition's final windows
        # (with it, in the merge shards)
        self.cascade = Cascade(settings, self.params, self._derived_row)
        self.watermark: int | None = None  # highest event time seen (ms)
        # Late corrections of the current block of the watermark (and of earlier ones until published):
        # (block start, roll-up index, window start, dimension values) -> the late events
        self.late_block_ms = int(settings.windows.late_block_s * 1000)
        self.late_every_ms = int(settings.windows.late_publish_every_s * 1000)
        self.late_groups: dict[tuple[int, int, int, tuple[str, ...]], Agg] = {}
        self.late_dirty: set[tuple[int, int, int, tuple[str, ...]]] = set()  # changed since last published
        self.late_from = -(2**63)  # the newest block with a late event
        self.next_late_ms = -(2**63)  # wall clock (now_ms) of the next publish of corrections
        self.events_in = 0
        self.late_events = 0
        self.pending: list[Row] = []  # final rows of windows closed since the last publish()
        self.next_close = -(2**63)  # the watermark at which some window may close (see _close_due)
        # The wall clock (ms), set by the dataflow: rows of windows that ended longer ago than their tier's
        # retention are not published. Pinot would delete them anyway, but only after their upsert keys had
        # taken memory (a backfill of a day would fill the recent tier with a day of fine windows). None: all.
        self.now_ms: int | None = None
        # Calls to publish() come about every windows.publish_every_s: a roll-up with a longer interval is due
        # half a call early rather than one call late
        self.slack_ms = int(500 * settings.windows.publish_every_s)
        self.tick_ms = int(1000 * settings.windows.publish_every_s)

    # -- input -----------------------------------------------------------------------------------------------

    def add(self, event: Event, offset: int) -> LateEvent | None:
        """Fold one valid event in. Returns the late marker when some window was final."""
        late = self.add_batch([event], [offset])
        return late[0] if late else None

    def add_batch(self, events: list[Event], offsets: Sequence[int]) -> list[LateEvent]:
        """Fold valid events in, in partition order. Returns a marker per late event; their corrections go out
        with the next publish() (or late_rows()).

        Exactly as one event at a time (which events are late depends on the watermark each one meets), but
        each group's events are gathered and folded in at once (Agg.add_many), which is where the batch saves.
        The batch is cut where some window closes (the watermark passes next_close): between two cuts every
        roll-up's closed state is fixed, so each roll-up routes the run's events on its own, in bulk where
        they all fall into open panes that already exist (see _route_open), one by one otherwise.
        """
        if not events:
            return []
        times = list(map(event_time, events))
        wm = self.watermark
        marks = list(accumulate(times, max, initial=times[0] if wm is None else wm))[1:]  # the watermark each meets
        late_at: set[int] = set()
        touched: list[Group] = []  # groups with events gathered in their buf, folded at the end or before a close
        start, n = 0, len(events)
        while start < n:
            # The next event that moves the watermark to where some window closes: it starts the next run.
            limit = self.next_close if self.watermark is None else max(self.next_close, self.watermark + 1)
            cut = bisect_left(marks, limit, lo=start)
            if cut == start:
                self.watermark = marks[cut]
                self._fold(touched)
                self._close_due()
                limit = max(self.next_close, self.watermark + 1)
                cut = bisect_left(marks, limit, lo=start + 1)
            self._route_run(events, offsets, times, marks, start, cut, touched, late_at)
            self.watermark = marks[cut - 1]
            start = cut
        self._fold(touched)
        late = [LateEvent(offsets[i], f"event time {times[i]} is past allowed lateness (watermark {marks[i]})")
                for i in sorted(late_at)]  # fmt: skip
        self.events_in += n
        self.late_events += len(late)
        return late

    def _route_run(self, events: list[Event], offsets: Sequence[int], times: list[int], marks: list[int], a: int,
                   b: int, touched: list[Group], late_at: set[int]) -> None:  # fmt: skip
        """Events a..b-1 into every roll-up's groups (no window closes among them); marks: the watermark each
        event meets."""
        params = self.params
        low = min(times[a:b])
        for r, rw in enumerate(self.rollups):
            if rw.derived:
                continue
            closed_upto = rw.closed_upto
            # closed_upto is a pane boundary, so an event's pane is open exactly when its time is >= it
            if (closed_upto is None or low >= closed_upto) and self._route_open(rw, events, offsets, times, a, b,
                                                                                touched):  # fmt: skip
                continue
            for i in range(a, b):
                event, offset, ts = events[i], offsets[i], times[i]
                pane_start = ts - ts % rw.pane_ms
                if closed_upto is None or pane_start >= closed_upto:  # every window of the pane is open
                    agg = rw.group(pane_start, event, params)
                else:
                    starts = rw.window_starts(pane_start)
                    closed = starts[: rw.closed_count(starts)]
                    if closed:
                        self._late(r, rw, closed, event, offset, marks[i])
                        for d, size in rw.late_too:
                            self._late(d, self.rollups[d], range(ts - ts % size, ts - ts % size + 1), event,
                                       offset, marks[i])  # fmt: skip
                        late_at.add(i)
                    if len(closed) == len(starts):
                        continue
                    agg = rw.group(pane_start, event, params)  # some window still open: the pane feeds it
                _gather(agg, event, offset, touched)

    def _route_open(self, rw: RollupWindows, events: list[Event], offsets: Sequence[int], times: list[int], a: int,
                    b: int, touched: list[Group]) -> bool:  # fmt: skip
        """Bulk routing of events whose panes are open and exist already: one dict lookup per event, done in C,
        and the routing of values not seen before in their pane, in order. False, with nothing changed, when
        some event needs a new pane: creating one is order-sensitive (it retires the panes before it and ranks
        values by their counts so far), so the caller goes one event at a time."""
        pane_ms, panes = rw.pane_ms, rw.panes
        pane_of = [ts - ts % pane_ms for ts in times[a:b]]
        starts = set(pane_of)
        if not panes.keys() >= starts:
            return False
        raws = map(rw.dims_of, events[a:b])
        if len(starts) == 1:
            entries = list(map(panes[starts.pop()].route.get, raws))
        else:  # out-of-order events reach back into the pane before: dict.get(route, raw) per event, in C
            routes = {ps: panes[ps].route for ps in starts}
            entries = list(map(dict.get, map(routes.__getitem__, pane_of), raws))
        params = self.params
        for entry, event, offset in zip(entries, events[a:b], offsets[a:b], strict=True):
            if entry is None:  # new in its pane (or past ROUTE_CACHE_MAX): caps decide, in input order
                agg = rw.group(event.ts - event.ts % pane_ms, event, params)
            else:
                entry[1] += 1
                agg = entry[0]
            # _gather inlined: this loop runs once per event and roll-up, where a call is a measurable share
            buf = agg.buf
            if not buf:
                touched.append(agg)
                pane, dims = agg.home
                pane.dirty.add(dims)
            buf.append(event)
            agg.buf_last = offset
        return True

    @staticmethod
    def _fold(touched: list[Group]) -> None:
        for agg in touched:
            agg.fold()
        touched.clear()

    def advance_idle(self, event_time_ms: int) -> None:
        """Move the watermark forward without input (a quiet, caught-up partition; also one that never had
        input, whose closed_upto the merge waits for)."""
        if self.watermark is None or event_time_ms > self.watermark:
            self.watermark = event_time_ms
            self._close_due()

    def has_open_windows(self) -> bool:
        return (bool(self.pending) or bool(self.late_dirty) or any(rw.panes for rw in self.rollups)
                or self.cascade.holds())  # fmt: skip

    def _close_due(self) -> None:
        assert self.watermark is not None
        horizon = self.watermark - self.lateness_ms
        for r, rw in enumerate(self.rollups):
            if rw.derived:
                continue  # closed by the cascade, with the roll-up it is built from
            new_closed = horizon - horizon % rw.pane_ms
            if rw.closed_upto is None or new_closed > rw.closed_upto:
                if self.emit_partials:
                    self._close_partials(r, rw, new_closed)
                else:
                    self.pending.extend(self._close(r, rw, new_closed))
        self._set_next_close()

    def _set_next_close(self) -> None:
        """The watermark at which the next pane boundary of some roll-up passes the lateness horizon."""
        closed = [rw.closed_upto + rw.pane_ms for rw in self.folded if rw.closed_upto is not None]
        self.next_close = min(closed) + self.lateness_ms if len(closed) == len(self.folded) else -(2**63)

    # -- output ----------------------------------------------------------------------------------------------

    def publish(self, flush: bool = False, provisional: bool = True) -> list[Row]:
        """Final rows of windows closed since the last call, then provisional rows of changed open windows.

        Sliding windows are published from the moment they are current (they end within one slide of the
        watermark) on: every event falls in size/slide windows, most of which end minutes ahead, and
        re-publishing all of them every second multiplied the output by that factor (30 for 5 min every 10 s)
        for values nobody reads yet. Their changes wait and go out when the window becomes current (or at once
        with flush, at the end of the input).

        provisional=False: final rows only; the changed open windows stay marked and go out at a later call.
        A roll-up whose tier publishes less often (history_publish_every_s) is skipped until it is due by the
        wall clock (now_ms; without it, every call), its changes staying marked meanwhile."""
        rows, self.pending = self.pending, []
        rows.extend(self.late_rows(flush))
        if provisional or flush:
            now = self.now_ms
            for rw in self.rollups:
                if rw.final_only:
                    for pane in rw.panes.values():
                        pane.dirty = set()
                    continue
                if not flush and now is not None and now < rw.next_publish_ms:
                    continue
                if now is not None:
                    rw.next_publish_ms = now + rw.publish_every_ms - self.slack_ms
                rows.extend(self._provisional(rw, flush))
        return rows

    def partials(self, flush: bool = False) -> PartialsOut:
        """Phase one's output for a tick: what each changed group gained since the last call (drained), and
        this partition's watermark and closed_upto per roll-up, which tell the merge which windows it may
        close. Groups that gained nothing are left out.

        A roll-up whose tier publishes less often (the history tier) is drained only at the slots of its
        interval by the wall clock (now_ms; without it, or with flush, at every call): the merge publishes it
        then anyway, and a group of a 15-minute window sent once per interval instead of every second was half
        the partials. Closing drains every pane first whatever the slot (_close_partials)."""
        out, self.pending_partials = self.pending_partials, []
        now = self.now_ms
        for r, rw in enumerate(self.rollups):
            if rw.publish_every_ms > self.tick_ms and not flush and now is not None:
                if now < rw.next_partials_ms:
                    continue
                rw.next_partials_ms = next_slot(now, rw.publish_every_ms)
            for ps, pane in rw.panes.items():
                out.extend(self._drain(r, rw.closed_upto, ps, pane))
        return PartialsOut(self.partition, self.watermark, [rw.closed_upto for rw in self.rollups], out)

    @staticmethod
    def _drain(r: int, after: int | None, ps: int, pane: Pane) -> Iterable[Partial]:
        groups = pane.groups
        dirty, pane.dirty = pane.dirty, set()
        return [Partial(r, ps, after, dims, groups[dims].drain()) for dims in sorted(dirty) if groups[dims].count]

    def _close_partials(self, r: int, rw: RollupWindows, new_closed: int) -> None:
        """Phase one's close: what every pane gained so far is drained under the old closed_upto (a sliding
        roll-up's open panes too: what they gain from now on no longer counts for the windows closing now),
        and panes no open window needs are dropped."""
        old = rw.closed_upto
        sliding = rw.size_ms > rw.pane_ms
        for ps in sorted(rw.panes):
            pane = rw.panes[ps]
            if ps + rw.size_ms <= new_closed:
                self.pending_partials.extend(self._drain(r, old, ps, pane))
                rw.drop(ps)
            elif sliding:
                self.pending_partials.extend(self._drain(r, old, ps, pane))
        rw.closed_upto = new_closed

    def _close(self, r: int, rw: RollupWindows, new_closed: int) -> list[Row]:
        closing = sorted(
            {ws for ps in rw.panes for ws in rw.window_starts(ps)
             if ws + rw.size_ms <= new_closed and not rw.is_closed(ws)}
        )  # fmt: skip
        feeds = self.cascade.feeds(r)
        rows: list[Row] = []
        for ws in closing:
            expired = self._expired(rw, ws)
            if expired and not feeds:
                continue
            for dims, agg in self._groups(rw, ws, None):
                if feeds:  # whether or not the window's own row is still kept by its tier
                    self.cascade.take(r, ws, dims, agg, (self.partition,))
                if not expired:
                    rows.extend(
                        also_live(self._row(rw, ws, dims, agg, kind="window", final=True), self._copied(rw, ws))
                    )
        if feeds:
            self.cascade.now_ms = self.now_ms
            rows.extend(self.cascade.close(r, new_closed))
        rw.closed_upto = new_closed
        for ps in sorted(ps for ps in rw.panes if ps + rw.size_ms <= new_closed):
            rw.drop(ps)
        return rows

    def _provisional(self, rw: RollupWindows, flush: bool) -> Iterable[Row]:
        dirty: dict[int, set[tuple[str, ...]]] = {}
        for ps, pane in rw.panes.items():
            if pane.dirty:
                for ws in rw.window_starts(ps):
                    if not rw.is_closed(ws):
                        dirty.setdefault(ws, set()).update(pane.dirty)
                pane.dirty = set()
        if rw.size_ms > rw.pane_ms:  # sliding: only windows that are current or have ended
            for ws, groups in dirty.items():
                rw.waiting.setdefault(ws, set()).update(groups)
            due = None if flush or self.watermark is None else self.watermark + rw.pane_ms
            dirty = {}
            for ws in sorted(rw.waiting):
                if rw.is_closed(ws):
                    del rw.waiting[ws]  # its final row covers every change
                elif due is None or ws + rw.size_ms <= due:
                    dirty[ws] = rw.waiting.pop(ws)
        for ws in sorted(dirty):
            yield from self._rows(rw, ws, dirty[ws], final=False)

    def _expired(self, rw: RollupWindows, ws: int, running: bool = False) -> bool:
        """Whether the table of the window's rows (running: of its running rows) no longer keeps it."""
        return not kept(self.now_ms, ws, rw.size_ms, rw.live_ms if running else rw.retention_ms)

    def _copied(self, rw: RollupWindows, ws: int) -> bool:
        """Whether a final row or correction of the window also goes to the live table (also_live)."""
        return rw.copies_to_live and kept(self.now_ms, ws, rw.size_ms, rw.live_ms)

    def _rows(self, rw: RollupWindows, ws: int, only: set[tuple[str, ...]] | None, final: bool) -> Iterable[Row]:
        if self._expired(rw, ws, running=not final):
            return
        for dims, agg in self._groups(rw, ws, only):
            yield self._row(rw, ws, dims, agg, kind="window", final=final)

    def _groups(self, rw: RollupWindows, ws: int,
                only: set[tuple[str, ...]] | None) -> Iterable[tuple[tuple[str, ...], Agg]]:  # fmt: skip
        panes = [rw.panes[ps] for ps in range(ws, ws + rw.size_ms, rw.pane_ms) if ps in rw.panes]
        keys = only if only is not None else {dims for pane in panes for dims in pane.groups}
        for dims in sorted(keys):
            # window rows are built without the merge only, where every group is an Agg
            parts = cast(list[Agg], [pane.groups[dims] for pane in panes if dims in pane.groups])
            yield dims, parts[0] if len(parts) == 1 else Agg.merged(self.params, parts)

    def _derived_row(self, rollup: Rollup, role: str, ws: int, dims: tuple[str, ...], agg: Agg,
                     sources: list[int]) -> Row:  # fmt: skip
        """A derived window's final row, of this partition's events (the cascade without the merge)."""
        return window_row(rollup, role, self.dimensions, ws, dims, agg, "window", True, self.partition, None,
                          version(agg.max_offset, True))  # fmt: skip

    def _late(self, r: int, rw: RollupWindows, starts: range, event: Event, offset: int, watermark: int) -> None:
        """A late event into its block's correction group of each closed window it belongs to."""
        if self._expired(rw, starts[-1]):
            return
        block = late_block(watermark, self.late_block_ms)
        self.late_from = max(self.late_from, block)
        dims = dimension_values(event, rw.rollup.dimensions)  # no pane left to cap against
        groups, params = self.late_groups, self.params
        for ws in starts:
            key = (block, r, ws, dims)
            agg = groups.get(key)
            if agg is None:
                agg = groups[key] = Agg(params)
            agg.add(event, offset)
            self.late_dirty.add(key)

    def late_rows(self, flush: bool = False) -> list[Row]:
        """Correction rows of the groups that gained late events since they were last published, once every
        late_publish_every_s by the wall clock (now_ms; without it, or with flush, at every call). Groups of
        blocks before the newest are complete (the watermark only grows) and are dropped once published."""
        now = self.now_ms
        if not self.late_dirty or (not flush and now is not None and now < self.next_late_ms):
            return []
        if now is not None:
            self.next_late_ms = now + self.late_every_ms - self.slack_ms
        dirty, self.late_dirty = self.late_dirty, set()
        groups = self.late_groups
        rows: list[Row] = []
        for block, r, ws, dims in sorted(dirty):
            rw = self.rollups[r]
            row = self._row(rw, ws, dims, groups[block, r, ws, dims], kind="late", final=True,
                            late=(block, self.late_block_ms))  # fmt: skip
            rows.extend(also_live(row, self._copied(rw, ws)))
        if any(key[0] < self.late_from for key in groups):
            self.late_groups = {key: agg for key, agg in groups.items() if key[0] >= self.late_from}
        return rows

    def _row(
        self,
        rw: RollupWindows,
        ws: int,
        dims: tuple[str, ...],
        agg: Agg,
        kind: str,
        final: bool,
        late: tuple[int, int] | None = None,
    ) -> Row:
        return window_row(rw.rollup, rw.role if final else "live", self.dimensions, ws, dims, agg, kind,
                          final, self.partition, late, version(agg.max_offset, final))  # fmt: skip

    # -- recovery --------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark,
            "events_in": self.events_in,
            "late_events": self.late_events,
            "pending": [tuple(row) for row in self.pending],
            "pending_partials": [tuple(p) for p in self.pending_partials],
            "late": (self.late_from, [(key, agg.settle()) for key, agg in self.late_groups.items()]),
            "rollups": [
                {
                    "closed_upto": rw.closed_upto,
                    "panes": {  # a pane per buffer (pack_state)
                        ps: pack_state(
                            (
                                [(dims, agg.settle()) for dims, agg in pane.groups.items()],
                                [list(a) for a in pane.admitted],
                                [(raw, hits) for raw, (_, hits) in pane.route.items()],
                                pane.retired,
                            )
                        )
                        for ps, pane in rw.panes.items()
                    },
                    "popular": [dict(pop) for pop in rw.popular],
                }
                for rw in self.rollups
            ],
            "cascade": self.cascade.snapshot(),
        }

    @classmethod
    def restore(cls, settings: PipelineSettings, partition: int, state: dict[str, Any],
                partials: bool = False) -> PartitionWindows:  # fmt: skip
        out = cls(settings, partition, partials)
        out.watermark = state["watermark"]
        out.events_in = state["events_in"]
        out.late_events = state["late_events"]
        out.pending = [Row(*row) for row in state["pending"]]  # (key, value[, role]): older snapshots had no role
        out.pending_partials = [Partial(*p) for p in state.get("pending_partials", ())]
        out.late_from, late = state["late"]
        out.late_groups = {(b, r, ws, tuple(dims)): Agg.from_state(out.params, st) for (b, r, ws, dims), st in late}
        out.late_dirty = set(out.late_groups)  # re-published: same versions, so harmless and idempotent
        for rw, saved in zip(out.rollups, state["rollups"], strict=True):
            rw.closed_upto = saved["closed_upto"]
            rw.popular = [dict(pop) for pop in saved["popular"]]
            for ps, packed in saved["panes"].items():
                if isinstance(packed, bytes):
                    groups, admitted, route, retired = unpack_state(packed)
                    groups = [(tuple(dims), st) for dims, st in groups]
                    route = [(tuple(raw), hits) for raw, hits in route]
                else:  # older snapshots: a tuple, the groups a dict
                    groups, admitted, route, retired = packed
                    groups = list(groups.items())
                pane = rw.panes[ps] = Pane(admitted=[set(a) for a in admitted], retired=retired)
                load = Gains.from_state if partials else Agg.from_state
                pane.groups = {dims: load(out.params, st) for dims, st in groups}
                for dims, agg in pane.groups.items():
                    agg.home = (pane, dims)
                for raw, hits in route:  # the same routes and counts, in the same order, as before the snapshot
                    pane.route[raw] = [rw.group_of(pane, raw, out.params), hits]
                pane.dirty = set(pane.groups)  # re-publish: same versions, so harmless and idempotent
        out.cascade.restore(state.get("cascade", {}))
        out._set_next_close()
        return out
