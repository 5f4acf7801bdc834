"""Per-partition event-time windowing: panes, watermark, provisional and final rows, late corrections. Pure.

One `PartitionWindows` holds the state of one Kafka source partition. Nothing is shared across partitions:
each partition has its own watermark (the highest event time it has seen), so a quiet partition stalls no
other, and Pinot merges the partitions' rows at query time (sums, min/max, sketch unions).

Rows (dicts, see pinot/tables/aggregates/schema.json) carry a primary key
  [rollup, window_start, dimension values..., source partition] (JSON-encoded)
and a version that grows with the input: 2 * (highest source offset folded into the row) + is_final. A replay
of the same offsets re-publishes rows with the same versions, so Pinot's upsert never regresses.

An event whose window is already final is late: it is published once to the late topic and counted through
additive correction rows (kind "late", one per late event and window, keyed by its source offset).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from livedash.pipeline.aggregate import Agg, SketchParams
from livedash.pipeline.contract import Event
from livedash.pipeline.settings import OTHER, PipelineSettings, Rollup

ALL = "__all__"  # the value of a dimension a roll-up does not group by


@dataclass(slots=True)
class Pane:
    groups: dict[tuple[str, ...], Agg] = field(default_factory=dict)
    admitted: list[set[str]] = field(default_factory=list)  # per roll-up dimension, values under the cap
    dirty: set[tuple[str, ...]] = field(default_factory=set)


@dataclass(slots=True, frozen=True)
class Row:
    key: bytes  # Kafka message key = Pinot primary key
    value: dict[str, Any]


@dataclass(slots=True, frozen=True)
class LateEvent:
    offset: int
    reason: str


class RollupWindows:
    """Panes and closing state of one roll-up in one partition."""

    def __init__(self, rollup: Rollup, caps: tuple[int, ...]) -> None:
        self.rollup = rollup
        self.size_ms = rollup.window.size_s * 1000
        self.pane_ms = rollup.window.pane_s * 1000
        self.caps = caps
        self.panes: dict[int, Pane] = {}
        self.closed_upto: int | None = None  # every window ending at or before this is final

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

    def dims_for(self, pane: Pane, event: Event) -> tuple[str, ...]:
        if not pane.admitted:
            pane.admitted = [set() for _ in self.rollup.dimensions]
        out = []
        for i, name in enumerate(self.rollup.dimensions):
            value = event.dims[name]
            seen = pane.admitted[i]
            if value not in seen:
                if len(seen) < self.caps[i]:
                    seen.add(value)
                else:
                    value = OTHER
            out.append(value)
        return tuple(out)


class PartitionWindows:
    def __init__(self, settings: PipelineSettings, partition: int) -> None:
        self.settings = settings
        self.partition = partition
        self.lateness_ms = int(settings.windows.allowed_lateness_s * 1000)
        metrics = tuple(settings.events.metrics)
        s = settings.sketches
        self.params = SketchParams(metrics, s.distinct_field, s.quantile_field, s.theta_lg_k, s.kll_k)
        self.dimensions = settings.all_dimensions
        self.rollups = [
            RollupWindows(r, tuple(settings.events.dimensions[d] for d in r.dimensions)) for r in settings.rollups
        ]
        self.watermark: int | None = None  # highest event time seen (ms)
        self.events_in = 0
        self.late_events = 0
        self.pending: list[Row] = []  # final rows of windows closed since the last publish()

    # -- input -----------------------------------------------------------------------------------------------

    def add(self, event: Event, offset: int) -> tuple[list[Row], LateEvent | None]:
        """Fold one valid event in. Returns correction rows and the late marker when some window was final."""
        self.events_in += 1
        if self.watermark is None or event.ts > self.watermark:
            self.watermark = event.ts
            # Windows close as the input moves the watermark, not when publish() happens to run: which events
            # are late then depends on the partition's messages alone, and a replay classifies them the same.
            self._close_due()
        corrections: list[Row] = []
        for rw in self.rollups:
            pane_start = event.ts - event.ts % rw.pane_ms
            starts = rw.window_starts(pane_start)
            closed = starts[: rw.closed_count(starts)]
            if len(closed) < len(starts):  # some window still open: the pane feeds it
                pane = rw.panes.get(pane_start)
                if pane is None:
                    pane = rw.panes[pane_start] = Pane()
                dims = rw.dims_for(pane, event)
                agg = pane.groups.get(dims)
                if agg is None:
                    agg = pane.groups[dims] = Agg(self.params)
                agg.add(event, offset)
                pane.dirty.add(dims)
            for ws in closed:
                corrections.append(self._correction(rw, ws, event, offset))
        if corrections:
            self.late_events += 1
            wm = self.watermark
            return corrections, LateEvent(offset, f"event time {event.ts} is past allowed lateness (watermark {wm})")
        return corrections, None

    def advance_idle(self, event_time_ms: int) -> None:
        """Move the watermark forward without input (a quiet, caught-up partition)."""
        if self.watermark is not None and event_time_ms > self.watermark:
            self.watermark = event_time_ms
            self._close_due()

    def has_open_windows(self) -> bool:
        return bool(self.pending) or any(rw.panes for rw in self.rollups)

    def _close_due(self) -> None:
        assert self.watermark is not None
        horizon = self.watermark - self.lateness_ms
        for rw in self.rollups:
            new_closed = horizon - horizon % rw.pane_ms
            if rw.closed_upto is None or new_closed > rw.closed_upto:
                self.pending.extend(self._close(rw, new_closed))

    # -- output ----------------------------------------------------------------------------------------------

    def publish(self) -> list[Row]:
        """Final rows of windows closed since the last call, then provisional rows of changed open windows."""
        rows, self.pending = self.pending, []
        for rw in self.rollups:
            rows.extend(self._provisional(rw))
        return rows

    def _close(self, rw: RollupWindows, new_closed: int) -> list[Row]:
        closing = sorted(
            {ws for ps in rw.panes for ws in rw.window_starts(ps)
             if ws + rw.size_ms <= new_closed and not rw.is_closed(ws)}
        )  # fmt: skip
        rows = [row for ws in closing for row in self._rows(rw, ws, None, final=True)]
        rw.closed_upto = new_closed
        for ps in [ps for ps in rw.panes if ps + rw.size_ms <= new_closed]:
            del rw.panes[ps]
        return rows

    def _provisional(self, rw: RollupWindows) -> Iterable[Row]:
        dirty: dict[int, set[tuple[str, ...]]] = {}
        for ps, pane in rw.panes.items():
            if pane.dirty:
                for ws in rw.window_starts(ps):
                    if not rw.is_closed(ws):
                        dirty.setdefault(ws, set()).update(pane.dirty)
                pane.dirty = set()
        for ws in sorted(dirty):
            yield from self._rows(rw, ws, dirty[ws], final=False)

    def _rows(self, rw: RollupWindows, ws: int, only: set[tuple[str, ...]] | None, final: bool) -> Iterable[Row]:
        panes = [rw.panes[ps] for ps in range(ws, ws + rw.size_ms, rw.pane_ms) if ps in rw.panes]
        keys = only if only is not None else {dims for pane in panes for dims in pane.groups}
        for dims in sorted(keys):
            parts = [pane.groups[dims] for pane in panes if dims in pane.groups]
            agg = parts[0] if len(parts) == 1 else Agg.merged(self.params, parts)
            yield self._row(rw, ws, dims, agg, kind="window", final=final, offset=None)

    def _correction(self, rw: RollupWindows, ws: int, event: Event, offset: int) -> Row:
        agg = Agg(self.params)
        agg.add(event, offset)
        dims = tuple(event.dims[d] for d in rw.rollup.dimensions)  # no pane left to cap against
        return self._row(rw, ws, dims, agg, kind="late", final=True, offset=offset)

    def _row(
        self, rw: RollupWindows, ws: int, dims: tuple[str, ...], agg: Agg, kind: str, final: bool, offset: int | None
    ) -> Row:
        key_parts: list[Any] = [rw.rollup.name, ws, *dims, self.partition]
        if offset is not None:
            key_parts += ["late", offset]
        pk = orjson.dumps(key_parts)
        by_name = dict(zip(rw.rollup.dimensions, dims, strict=True))
        value: dict[str, Any] = {
            "pk": pk.decode(),
            "rollup_name": rw.rollup.name,
            "window_start": ws,
            "window_end": ws + rw.size_ms,
            "source_partition": self.partition,
            "kind": kind,
            **{d: by_name.get(d, ALL) for d in self.dimensions},
            **agg.fields(),
            "is_final": int(final),
            "version": 2 * agg.max_offset + int(final),
        }
        return Row(pk, value)

    # -- recovery --------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "watermark": self.watermark,
            "events_in": self.events_in,
            "late_events": self.late_events,
            "pending": [(row.key, row.value) for row in self.pending],
            "rollups": [
                {
                    "closed_upto": rw.closed_upto,
                    "panes": {
                        ps: ({dims: agg.to_state() for dims, agg in pane.groups.items()}, pane.admitted)
                        for ps, pane in rw.panes.items()
                    },
                }
                for rw in self.rollups
            ],
        }

    @classmethod
    def restore(cls, settings: PipelineSettings, partition: int, state: dict[str, Any]) -> PartitionWindows:
        out = cls(settings, partition)
        out.watermark = state["watermark"]
        out.events_in = state["events_in"]
        out.late_events = state["late_events"]
        out.pending = [Row(key, value) for key, value in state["pending"]]
        for rw, saved in zip(out.rollups, state["rollups"], strict=True):
            rw.closed_upto = saved["closed_upto"]
            for ps, (groups, admitted) in saved["panes"].items():
                pane = rw.panes[ps] = Pane(admitted=[set(a) for a in admitted])
                pane.groups = {dims: Agg.from_state(out.params, st) for dims, st in groups.items()}
                pane.dirty = set(pane.groups)  # re-publish: same versions, so harmless and idempotent
        return out
