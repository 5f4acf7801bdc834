"""Phase two of the two-phase merge (docs/architecture.md, "One row per window and group"): one shard of the
merged groups. Pure.

Every source partition's phase one (PartitionWindows with partials=True) sends each tick what its changed
groups gained (Partial: roll-up, pane, dimension values, Agg.drain's form) and its watermark and closed_upto per
roll-up. A shard holds the groups whose (roll-up, dimension values) hash to it, all panes of each, so it can
build any window, tumbling or sliding, from its merged panes. It publishes one row per (window, group):

- provisional for the windows a tick changed (sliding windows from the moment they are current, as phase one
  did; the history tier every `history_publish_every_s`), and
- final once every source partition has closed the window (the minimum of their closed_upto), after which the
  panes no open window needs are dropped.

A merged row's version is 2 * (events folded) + is_final. It grows with the input; the events a window has
folded so far are a subset of its final events, so a provisional row with the final's count has the final's
content; and a replay after a crash (Bytewax snapshots sources and shards at the same epoch, so the partials
folded are exactly those sent before the snapshot) reaches the same final row with the same version. Late
events are not merged: phase one publishes their additive correction rows itself, as before.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from livedash.pipeline.aggregates import Agg, SketchParams, pack_state, unpack_state
from livedash.pipeline.cascade import Cascade
from livedash.pipeline.rows import Row
from livedash.pipeline.settings import PipelineSettings, Rollup
from livedash.pipeline.windows import Partial, PartialsOut, also_live, kept, next_slot, window_row

MERGED = -1  # the source_partition of a merged row: every partition's events
NO_BOUND = -(2**63)


def pack(tick: PartialsOut) -> bytes:
    """One tick for one shard as a single msgpack buffer: crossing between workers, one buffer pickles in a
    fraction of the time its partials take one by one (bench.exchange: 3.6 against 11 us per partial)."""
    return pack_state(tick)


def unpack(payload: bytes) -> PartialsOut:
    """pack's inverse; partials come back as lists (fold unpacks them by position)."""
    partition, watermark, closed_upto, partials = unpack_state(payload)
    return PartialsOut(partition, watermark, closed_upto, partials)


def shard_of(rollup: str, dims: Sequence[str], shards: int) -> int:
    """The shard of a group: a stable hash (Python's str hash differs between processes), over the roll-up and
    its dimension values only, so every pane and window of the group meets in one shard."""
    return zlib.crc32(orjson.dumps([rollup, *dims])) % shards


def split(out: PartialsOut, names: Sequence[str], shards: int) -> list[PartialsOut]:
    """One tick of a partition for each shard: its own partials, and the watermark and closed_upto for all
    (a shard that got no partial still learns that the partition moved on)."""
    by_shard: list[list[Partial]] = [[] for _ in range(shards)]
    for p in out.partials:
        by_shard[shard_of(names[p.rollup], p.dims, shards)].append(p)
    return [PartialsOut(out.partition, out.watermark, out.closed_upto, parts) for parts in by_shard]


class _Rollup:
    __slots__ = ("copies_to_live", "dirty", "ended_every_ms", "final_only", "final_upto", "live_ms", "next_ended_ms",
                 "next_publish_ms", "pane_ms", "panes", "publish_every_ms", "retention_ms", "role", "rollup", "size_ms",
                 "sources", "waiting")  # fmt: skip

    def __init__(self, settings: PipelineSettings, index: int) -> None:
        rollup = settings.rollups[index]
        self.rollup = rollup
        self.role = rollup.role
        # PipelineSettings.has_running_rows: running rows to the live table, final rows to the tier's and (while it
        # keeps the window) the live one's (windows.also_live)
        self.copies_to_live = settings.copies_to_live(rollup)
        self.live_ms = settings.retention_ms_of("live")
        self.size_ms = rollup.window.size_s * 1000
        self.pane_ms = rollup.window.pane_s * 1000
        self.retention_ms = settings.retention_ms(rollup)
        self.publish_every_ms = settings.publish_every_ms(rollup)
        self.next_publish_ms = -(2**63)
        # Ended windows (not final yet) change only through late events: their running values go out at the late
        # cadence, not every tick (a sliding window's late event dirtied up to 30 windows, each a merge of 30 panes)
        self.ended_every_ms = max(self.publish_every_ms, int(settings.windows.late_publish_every_s * 1000))
        self.next_ended_ms = -(2**63)
        # pane -> after (Partial.after, NO_BOUND for None) -> groups: a segment counts for the pane's windows
        # ending after its bound only
        self.panes: dict[int, dict[int, dict[tuple[str, ...], Agg]]] = {}
        self.dirty: dict[int, set[tuple[str, ...]]] = {}  # pane -> groups changed since the last publish
        # pane -> group -> the partitions that sent it events (a row's source_partitions: which partition kept
        # which value under its caps, for verify)
        self.sources: dict[int, dict[tuple[str, ...], set[int]]] = {}
        # changed groups held back: of sliding windows not yet current, and of ended windows until the late cadence
        self.waiting: dict[int, set[tuple[str, ...]]] = {}
        self.final_upto: int | None = None  # every window ending at or before this was published final
        self.final_only = settings.final_only(rollup)  # no running rows

    def window_starts(self, pane_start: int) -> range:
        return range(pane_start - self.size_ms + self.pane_ms, pane_start + 1, self.pane_ms)


class MergeShard:
    def __init__(self, settings: PipelineSettings, partitions: Iterable[int]) -> None:
        self.settings = settings
        s = settings.sketches
        self.params = SketchParams(tuple(settings.events.metrics), s.distinct_field, s.quantile_field, s.theta_lg_k,
                                   s.kll_k)  # fmt: skip
        self.dimensions = settings.all_dimensions
        self.rollups = [_Rollup(settings, i) for i in range(len(settings.rollups))]
        # Every source partition the dataflow reads: a window is final only once each of them has closed it.
        self.closed: dict[int, list[int | None]] = {p: [None] * len(self.rollups) for p in partitions}
        self.watermarks: dict[int, int | None] = dict.fromkeys(self.closed)
        self.now_ms: int | None = None  # the wall clock, set by the dataflow (retention, the history cadence)
        self.slack_ms = int(500 * settings.windows.publish_every_s)
        # A slower tier's gains leave phase one at its slots (PartitionWindows.partials): published two ticks
        # after, when every partition's tick since has come in.
        self.tick_ms = int(1000 * settings.windows.publish_every_s)
        # Derived roll-ups (livedash.pipeline.cascade): every window of a group is in this shard, so the coarse
        # windows derived from its final ones are built here too
        self.cascade = Cascade(settings, self.params, self._derived_row)

    def _derived_row(self, rollup: Rollup, role: str, ws: int, dims: tuple[str, ...], agg: Agg,
                     sources: list[int]) -> Row:  # fmt: skip
        return window_row(rollup, role, self.dimensions, ws, dims, agg, "window", True, MERGED, None,
                          2 * agg.count + 1, sources=sources)  # fmt: skip

    def watch(self, partitions: Iterable[int]) -> None:
        """Also wait for these partitions (added to the source since the snapshot this shard came from)."""
        for p in partitions:
            if p not in self.closed:
                self.closed[p] = [None] * len(self.rollups)
                self.watermarks[p] = None

    def has_pending(self) -> bool:
        """Changes not yet published (held back by the cadence, or sliding windows not yet current)."""
        return any(mr.dirty or mr.waiting for mr in self.rollups)

    def fold(self, tick: PartialsOut) -> None:
        """One partition's tick: its partials into the merged panes, then its watermark and closed_upto."""
        params = self.params
        for r, ps, after, dims, state in tick.partials:
            mr = self.rollups[r]
            dims = tuple(dims)
            if mr.final_upto is not None and ps + mr.size_ms <= mr.final_upto:
                # Every window of the pane was published final: phase one sends a pane's gains before it says
                # the pane's windows are closed, so only a partition the shard did not wait for can do this.
                raise ValueError(f"partial for pane {ps} of {mr.rollup.name} after its windows were final")
            bound = self._bound(mr, ps, after)
            groups = mr.panes.setdefault(ps, {}).setdefault(bound, {})
            agg = groups.get(dims)
            if agg is None:
                agg = groups[dims] = Agg(params)
            agg.absorb(state)
            mr.dirty.setdefault(ps, set()).add(dims)
            mr.sources.setdefault(ps, {}).setdefault(dims, set()).add(tick.partition)
        if tick.partition not in self.closed:
            raise ValueError(f"partition {tick.partition} is not one of the shard's {sorted(self.closed)}")
        self.closed[tick.partition] = list(tick.closed_upto)
        self.watermarks[tick.partition] = tick.watermark

    @staticmethod
    def _bound(mr: _Rollup, ps: int, after: int | None) -> int:
        """The segment of pane ps that gains sent under closed_upto `after` join. A bound that excludes no window
        still to be built (one before the pane's first window ends, or one every excluded window of which is
        final) is the pane's unbounded segment. (A tumbling pane's gains always are: kept apart, every
        closed_upto a pane met made a segment, 8 per pane, merged at every publish.)"""
        if after is None or after < ps + mr.pane_ms or (mr.final_upto is not None and after <= mr.final_upto):
            return NO_BOUND
        return after

    def publish(self, flush: bool = False) -> list[Row]:
        """Final rows of windows every partition has closed, then provisional rows of changed open windows
        (flush: every changed window at once, at the end of the input)."""
        rows: list[Row] = []
        self.cascade.now_ms = self.now_ms
        for r, mr in enumerate(self.rollups):
            rows.extend(self._close(r, mr))
        known = [w for w in self.watermarks.values() if w is not None]
        # A window has ended once every partition's watermark is past it (the slowest's): until then the slower
        # partitions' on-time events still fill it, and they go out every tick as an open window's do (by the
        # fastest partition's watermark they waited for the late cadence, up to 10 s, in the last bucket of a
        # series). A sliding window is current once it ends within a pane of the fastest partition's watermark.
        watermarks = (min(known), max(known)) if known else None
        now = self.now_ms
        for mr in self.rollups:
            if mr.final_only:  # its final rows only (_close): what changed stays in its panes
                mr.dirty = {}
                continue
            if not flush and now is not None and now < mr.next_publish_ms:
                continue
            if now is not None and mr.publish_every_ms > self.tick_ms:
                mr.next_publish_ms = next_slot(now, mr.publish_every_ms, 2 * self.tick_ms)
            elif now is not None:
                mr.next_publish_ms = now + mr.publish_every_ms - self.slack_ms
            rows.extend(self._provisional(mr, watermarks, flush))
        return rows

    def _closed_upto(self, r: int) -> int | None:
        closed = [c[r] for c in self.closed.values()]
        return None if not closed or any(c is None for c in closed) else min(c for c in closed if c is not None)

    def _close(self, r: int, mr: _Rollup) -> list[Row]:
        upto = self._closed_upto(r)
        if upto is None or (mr.final_upto is not None and upto <= mr.final_upto):
            return []
        low = NO_BOUND if mr.final_upto is None else mr.final_upto
        starts = sorted({ws for ps in mr.panes for ws in mr.window_starts(ps) if low < ws + mr.size_ms <= upto})
        rows: list[Row] = []
        feeds = self.cascade.feeds(r)
        for ws in starts:
            if not feeds and self._expired(mr, ws):
                continue
            for dims, agg, sources in self._groups(mr, ws, None):
                if feeds:  # whether or not its own row is still kept by its tier
                    self.cascade.take(r, ws, dims, agg, sources)
                row = self._row(mr, ws, dims, agg, sources, final=True)
                if row is not None:
                    rows.extend(also_live(row, mr.copies_to_live and kept(self.now_ms, ws, mr.size_ms, mr.live_ms)))
        if feeds:
            rows.extend(self.cascade.close(r, upto))
        mr.final_upto = upto
        for ps in [ps for ps in mr.panes if ps + mr.size_ms <= upto]:
            del mr.panes[ps]
            mr.dirty.pop(ps, None)
            mr.sources.pop(ps, None)
        if mr.size_ms > mr.pane_ms:  # sliding: segments whose bounds only excluded windows now final join as one
            for ps, segments in mr.panes.items():
                self._join_segments(mr, ps, segments)
        for ws in [ws for ws in mr.waiting if ws + mr.size_ms <= upto]:
            del mr.waiting[ws]  # its final row covers every change
        return rows

    def _join_segments(self, mr: _Rollup, ps: int, segments: dict[int, dict[tuple[str, ...], Agg]]) -> None:
        """A sliding pane's segments folded into its unbounded one where their bounds now are (_bound): a window
        merged 62 parts on average, now 26 (5 minutes of bench.hotpath --live)."""
        done = [after for after in segments if after != NO_BOUND and self._bound(mr, ps, after) == NO_BOUND]
        if not done:
            return
        base = segments.setdefault(NO_BOUND, {})
        for after in sorted(done):
            for dims, agg in segments.pop(after).items():
                into = base.get(dims)
                if into is None:
                    base[dims] = agg
                else:
                    into.absorb_agg(agg)

    def _is_final(self, mr: _Rollup, ws: int) -> bool:
        return mr.final_upto is not None and ws + mr.size_ms <= mr.final_upto

    def _provisional(self, mr: _Rollup, watermarks: tuple[int, int] | None, flush: bool) -> Iterable[Row]:
        """Running rows of changed windows: open ones (for a sliding roll-up, the current ones) at every call,
        ended ones every ended_every_ms (flush, or no watermark yet: every change at once). watermarks: the
        slowest and the fastest partition's."""
        for ps, groups in mr.dirty.items():
            for ws in mr.window_starts(ps):
                if not self._is_final(mr, ws):
                    mr.waiting.setdefault(ws, set()).update(groups)
        mr.dirty = {}
        now = self.now_ms
        ended_due = flush or watermarks is None or now is None or now >= mr.next_ended_ms
        if ended_due and now is not None:
            mr.next_ended_ms = now + mr.ended_every_ms - self.slack_ms
        sliding = mr.size_ms > mr.pane_ms
        due: dict[int, set[tuple[str, ...]]] = {}
        for ws in sorted(mr.waiting):
            end = ws + mr.size_ms
            if watermarks is None or flush:
                ready = True
            elif end > watermarks[0]:  # open; a sliding window only once current (it ends within a pane)
                ready = not sliding or end <= watermarks[1] + mr.pane_ms
            else:
                ready = ended_due
            if ready:
                due[ws] = mr.waiting.pop(ws)
        for ws in sorted(due):
            if self._expired(mr, ws, running=True):
                continue
            for dims, agg, sources in self._groups(mr, ws, due[ws]):
                row = self._row(mr, ws, dims, agg, sources, final=False)
                if row is not None:
                    yield row

    def _row(self, mr: _Rollup, ws: int, dims: tuple[str, ...], agg: Agg, sources: list[int],
             final: bool) -> Row | None:  # fmt: skip
        """The window's row, or None where its tier no longer keeps the window."""
        if self._expired(mr, ws, running=not final):
            return None
        return window_row(mr.rollup, mr.role if final else "live", self.dimensions, ws, dims, agg, "window",
                          final, MERGED, None, 2 * agg.count + int(final), sources=sources)  # fmt: skip

    def _expired(self, mr: _Rollup, ws: int, running: bool = False) -> bool:
        """Whether the table of the window's rows (running: of its running rows) no longer keeps it."""
        return not kept(self.now_ms, ws, mr.size_ms, mr.live_ms if running else mr.retention_ms)

    def _groups(self, mr: _Rollup, ws: int,
                only: set[tuple[str, ...]] | None) -> Iterable[tuple[tuple[str, ...], Agg, list[int]]]:  # fmt: skip
        """The window's merged groups (only those named, if any): dimension values, value, source partitions."""
        end = ws + mr.size_ms
        starts = [ps for ps in range(ws, end, mr.pane_ms) if ps in mr.panes]
        panes = [groups for ps in starts for after, groups in mr.panes[ps].items() if after < end]
        keys = only if only is not None else {dims for groups in panes for dims in groups}
        for dims in sorted(keys):
            parts = [groups[dims] for groups in panes if dims in groups]
            if not parts:
                continue
            agg = parts[0] if len(parts) == 1 else Agg.merged(self.params, parts)
            yield dims, agg, sorted({p for ps in starts for p in mr.sources.get(ps, {}).get(dims, ())})

    # -- recovery --------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "closed": {p: list(c) for p, c in self.closed.items()},
            "watermarks": dict(self.watermarks),
            "rollups": [
                {
                    "final_upto": mr.final_upto,
                    # a pane per buffer: its segments' groups, and each group's source partitions
                    "panes": {
                        ps: pack_state(
                            (
                                [
                                    (after, [(dims, agg.settle()) for dims, agg in groups.items()])
                                    for after, groups in segments.items()
                                ],
                                [(dims, sorted(ps_)) for dims, ps_ in mr.sources.get(ps, {}).items()],
                            )
                        )
                        for ps, segments in mr.panes.items()
                    },
                    "dirty": {ps: set(groups) for ps, groups in mr.dirty.items()},
                    "waiting": {ws: set(groups) for ws, groups in mr.waiting.items()},
                }
                for mr in self.rollups
            ],
            "cascade": self.cascade.snapshot(),
        }

    @classmethod
    def restore(cls, settings: PipelineSettings, state: dict[str, Any]) -> MergeShard:
        out = cls(settings, state["closed"])
        out.closed = {p: list(c) for p, c in state["closed"].items()}
        out.watermarks = dict(state["watermarks"])
        for mr, saved in zip(out.rollups, state["rollups"], strict=True):
            mr.final_upto = saved["final_upto"]
            if "sources" in saved:  # older snapshots: dicts, and the sources apart
                mr.panes = {ps: {after: {dims: Agg.from_state(out.params, st) for dims, st in groups.items()}
                                 for after, groups in segments.items()}
                            for ps, segments in saved["panes"].items()}  # fmt: skip
                mr.sources = {ps: {dims: set(ps_) for dims, ps_ in groups.items()}
                              for ps, groups in saved["sources"].items()}  # fmt: skip
            else:
                for ps, packed in saved["panes"].items():
                    segments, sources = unpack_state(packed)
                    mr.panes[ps] = {after: {tuple(dims): Agg.from_state(out.params, st) for dims, st in groups}
                                    for after, groups in segments}  # fmt: skip
                    mr.sources[ps] = {tuple(dims): set(ps_) for dims, ps_ in sources}
            mr.dirty = {ps: set(groups) for ps, groups in saved["dirty"].items()}
            mr.waiting = {ws: set(groups) for ws, groups in saved["waiting"].items()}
        out.cascade.restore(state.get("cascade", {}))
        return out
