"""The cascade: coarse windows built from finer windows' final values, never from events again. Pure.

A derived roll-up (`from:` in config/pipeline.yaml, livedash.pipeline.settings) has the dimensions of a finer
tumbling roll-up and a window that is a multiple of its. Where the finer roll-up's windows become final (a merge
shard, or a partition without the merge), each final group is also folded into the derived window holding it
(Agg.absorb_agg: sums, min/max, sketch unions); once the finer roll-up is final past a derived window's end, that
window is final too and goes out once, as one final row per group, and feeds the roll-ups derived from it in
turn (geo_5m -> geo_1h -> geo_1d). No provisional rows: a coarse window is read for ranges of hours and days,
and its open part is read from the finer roll-up meanwhile (dashboard/stitch.py).

A derived group holds the finer groups' values after their caps, so its values are those the finer windows
admitted (up to a cap per finer window, not per derived window). Late events reach a derived window through
its own correction rows (livedash.pipeline.windows): an event late for its finer window is late for every
window derived from it, whose final value the finer final row already went into without it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from livedash.pipeline.aggregates import Agg, SketchParams
from livedash.pipeline.rows import Row
from livedash.pipeline.settings import PipelineSettings, Rollup

Groups = dict[tuple[str, ...], Agg]
RowOf = Callable[[Rollup, str, int, tuple[str, ...], Agg, list[int]], Row]  # (roll-up, role, ws, dims, agg, sources)


class _Level:
    __slots__ = ("groups", "index", "retention_ms", "role", "rollup", "size_ms", "sources")

    def __init__(self, settings: PipelineSettings, index: int) -> None:
        self.index = index
        self.rollup = settings.rollups[index]
        self.role = self.rollup.role
        self.size_ms = self.rollup.window.size_s * 1000
        self.retention_ms = settings.retention_ms(self.rollup)
        self.groups: dict[int, Groups] = {}  # window start -> groups folded so far
        self.sources: dict[int, dict[tuple[str, ...], set[int]]] = {}  # ... -> the partitions whose events they hold


class Cascade:
    """The derived roll-ups' open windows of one merge shard (or of one partition without the merge)."""

    def __init__(self, settings: PipelineSettings, params: SketchParams, row_of: RowOf) -> None:
        self.params = params
        self.row_of = row_of
        self.levels: dict[int, _Level] = {}
        self.children: dict[int, list[int]] = {}  # roll-up index -> the derived roll-ups built from it
        index = {r.name: i for i, r in enumerate(settings.rollups)}
        for i, rollup in enumerate(settings.rollups):
            if rollup.derived_from is not None:
                self.levels[i] = _Level(settings, i)
                self.children.setdefault(index[rollup.derived_from], []).append(i)
        self.now_ms: int | None = None  # the wall clock: windows older than their tier keeps are not published

    def __bool__(self) -> bool:
        return bool(self.levels)

    def holds(self) -> bool:
        """Some derived window is still open (its partition must still close windows, quiet or not)."""
        return any(level.groups for level in self.levels.values())

    def feeds(self, rollup: int) -> bool:
        return rollup in self.children

    def take(self, rollup: int, ws: int, dims: tuple[str, ...], agg: Agg, sources: Iterable[int]) -> None:
        """A final group of roll-up `rollup`'s window ws: into the window of each roll-up derived from it."""
        for d in self.children.get(rollup, ()):
            level = self.levels[d]
            start = ws - ws % level.size_ms
            groups = level.groups.setdefault(start, {})
            into = groups.get(dims)
            if into is None:
                into = groups[dims] = Agg(self.params)
            into.absorb_agg(agg)
            level.sources.setdefault(start, {}).setdefault(dims, set()).update(sources)

    def close(self, rollup: int, upto: int) -> list[Row]:
        """Roll-up `rollup` is final up to `upto` (every window ending at or before it): the final rows of the
        derived windows that ends, which feed the roll-ups derived from them in turn."""
        rows: list[Row] = []
        for d in self.children.get(rollup, ()):
            level = self.levels[d]
            for start in sorted(s for s in level.groups if s + level.size_ms <= upto):
                groups, sources = level.groups.pop(start), level.sources.pop(start)
                expired = self.now_ms is not None and start + level.size_ms < self.now_ms - level.retention_ms
                for dims in sorted(groups):
                    agg, srcs = groups[dims], sources[dims]
                    self.take(d, start, dims, agg, srcs)
                    if not expired:
                        rows.append(self.row_of(level.rollup, level.role, start, dims, agg, sorted(srcs)))
            rows.extend(self.close(d, upto))
        return rows

    def snapshot(self) -> dict[int, dict[int, dict[tuple[str, ...], tuple[Any, ...]]]]:
        return {
            d: {start: {dims: (agg.settle(), sorted(level.sources[start][dims])) for dims, agg in groups.items()}
                for start, groups in level.groups.items()}
            for d, level in self.levels.items()
        }  # fmt: skip

    def restore(self, state: dict[int, dict[int, dict[tuple[str, ...], tuple[Any, ...]]]]) -> None:
        for d, windows in state.items():
            level = self.levels[d]
            for start, groups in windows.items():
                level.groups[start] = {dims: Agg.from_state(self.params, st) for dims, (st, _) in groups.items()}
                level.sources[start] = {dims: set(srcs) for dims, (_, srcs) in groups.items()}
