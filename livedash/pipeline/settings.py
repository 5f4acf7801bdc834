"""Typed model of config/pipeline.yaml: the event contract, windows, sketches and roll-ups."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class FrozenModel(BaseModel):
    """The base of every settings model: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricRange(FrozenModel):
    min: float = float("-inf")
    max: float = float("inf")


class EventContract(FrozenModel):
    types: tuple[str, ...] = Field(min_length=1)
    identifiers: tuple[str, ...] = ("event_id", "user_id")
    dimensions: dict[str, int]  # name -> cap
    metrics: dict[str, MetricRange] = {}
    max_future_s: float = Field(default=3600, gt=0)
    max_age_s: float = Field(default=7 * 86400, gt=0)

    @field_validator("dimensions")
    @classmethod
    def _caps(cls, value: dict[str, int]) -> dict[str, int]:
        for name, cap in value.items():
            if not _NAME.match(name):
                raise ValueError(f"dimension {name!r} must be a lower-case identifier")
            if not 1 <= cap <= 100_000:
                raise ValueError(f"dimension {name!r} needs a cap between 1 and 100000, got {cap}")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> EventContract:
        names = [*self.identifiers, *self.dimensions, *self.metrics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"{', '.join(dupes)} declared twice (identifiers, dimensions and metrics are disjoint)")
        if "ts" in names:
            raise ValueError("'ts' is the event time and cannot be declared as a field")
        return self


class WindowSettings(FrozenModel):
    allowed_lateness_s: float = Field(default=300, ge=0)
    publish_every_s: float = Field(default=1, gt=0, le=60)
    # The history tier's open windows (5-15 minutes, read for ranges of hours) are re-published this often:
    # every second, their growing sketches were half of a partition's output bytes (docs/benchmarks.md).
    history_publish_every_s: float = Field(default=10, gt=0, le=300)
    idle_timeout_s: float = Field(default=10, gt=0)
    # Further behind the raw topic's end than this (messages), a partition publishes final rows only: running
    # values of windows it is racing through are stale at once, and re-publishing them every second was most
    # of a catch-up's work. They go out again once it is this close.
    provisional_max_lag: int = Field(default=50_000, ge=0)
    # The two-phase merge (docs/architecture.md, "One row per window and group"): each partition sends what its
    # groups gained to this many merge shards, which publish one row per window and group (config/pipeline.yaml:
    # 4, spread evenly over 1, 2 or 4 workers). 0: every partition publishes its own rows.
    merge_shards: int = Field(default=0, ge=0, le=256)
    # Late corrections: one additive row per (window, group, source partition, block of this many seconds of the
    # partition's watermark) holding the late events that met a watermark in the block (a replay meets the same
    # watermarks), re-published every late_publish_every_s while the block gains some. One row per late event
    # and window made the 5-minute window sliding by 10 s 30 rows for every late event.
    late_block_s: float = Field(default=60, gt=0, le=86400)
    late_publish_every_s: float = Field(default=30, gt=0, le=300)


class DedupSettings(FrozenModel):
    """Duplicates by event_id, per source partition (livedash/pipeline/dedup.py, docs/events.md)."""

    # An id is remembered until the partition's watermark passes its event time by this much (plus up to a
    # tenth of it); 0 switches deduplication off. Keep it at least allowed_lateness_s: a duplicate of an event
    # whose window is still open is then always recognised.
    horizon_s: float = Field(default=600, ge=0, le=7 * 86400)
    # Ids remembered per source partition at most (50-130 bytes each: dedup.py): past it the oldest are forgotten early.
    max_ids: int = Field(default=1_000_000, ge=1_000, le=100_000_000)


class SketchSettings(FrozenModel):
    distinct_field: str = "user_id"
    quantile_field: str = "latency_ms"
    theta_lg_k: int = Field(default=12, ge=4, le=26)  # 12 = Pinot's default nominal entries 4096
    kll_k: int = Field(default=200, ge=8, le=65535)


class RollupWindow(FrozenModel):
    size_s: int = Field(gt=0)
    every_s: int | None = Field(default=None, gt=0)  # None: tumbling

    @model_validator(mode="after")
    def _divides(self) -> RollupWindow:
        if self.every_s is not None and (self.every_s > self.size_s or self.size_s % self.every_s):
            raise ValueError(f"every_s ({self.every_s}) must divide size_s ({self.size_s})")
        return self

    @property
    def pane_s(self) -> int:
        """Windows are unions of panes of this length (sliding: the slide; tumbling: the window)."""
        return self.every_s or self.size_s

    @property
    def panes_per_window(self) -> int:
        return self.size_s // self.pane_s


class Rollup(FrozenModel):
    name: str
    dimensions: tuple[str, ...] = Field(min_length=1)
    window: RollupWindow
    # recent: the `aggregates` topic and table, kept `retention.recent_h` (fine windows for live views);
    # history: `aggregates_history`, kept `retention.history_h` (coarse windows for long ranges).
    tier: Literal["recent", "history"] = "recent"
    # Derived (the cascade, docs/architecture.md): built from the final windows of this finer roll-up (same
    # dimensions, same tier, a window a multiple of its) by the merge, never from events, and published once,
    # final. Late events count through its own correction rows, late when they miss the finer window.
    derived_from: str | None = Field(default=None, alias="from")
    # Final only: its windows are published once, final (no running rows while open, so Pinot holds one version
    # of each), and until then the dashboard reads them from this finer roll-up folded from the same events
    # (same dimensions, a window dividing its, any tier): a live view of a long range stays as fresh as a short
    # one's. Late events still count through correction rows.
    live_from: str | None = None

    @property
    def role(self) -> str:
        """The sink's name for the topic of its tier's final rows (rows.Row.role); running rows go to "live"."""
        return "history" if self.tier == "history" else "aggregates"

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be a lower-case identifier, got {value!r}")
        return value


class TopicNames(FrozenModel):
    raw: str = "events_raw"
    aggregates: str = "aggregates"  # the recent tier's rows (and the Pinot table reading them)
    history: str = "aggregates_history"  # the history tier's rows (and the Pinot table reading them)
    # The running rows of every roll-up's open windows, and a copy of their final rows and corrections while it
    # keeps the window (retention.live_min): what the live views read until a window is final in its tier.
    live: str = "aggregates_live"
    dead_letter: str = "events_dead_letter"
    late: str = "events_late"
    # Every event the roll-ups count, once, normalized (absent dimensions "__none__"), in the partition of its
    # raw message: what the events_raw table reads. None: not published (benchmarks of the roll-ups alone).
    valid: str | None = "events_valid"


class RetentionSettings(FrozenModel):
    """Hours each tier's Pinot table keeps rows (`livedash apply` writes them into the table configs). Upsert
    keys stay in Pinot's memory for as long, so fine windows are kept briefly and long ranges read the coarse
    windows of the history tier."""

    recent_h: int = Field(default=6, gt=0)
    history_h: int = Field(default=720, gt=0)
    # The live table: open windows' running rows, every version of which Pinot 0.11 keeps until retention deletes
    # its segment; minutes, at least twice the longest running window plus the allowed lateness (checked).
    live_min: int = Field(default=75, gt=0)


class PipelineSettings(FrozenModel):
    events: EventContract
    windows: WindowSettings = WindowSettings()
    retention: RetentionSettings = RetentionSettings()
    sketches: SketchSettings = SketchSettings()
    dedup: DedupSettings = DedupSettings()
    rollups: tuple[Rollup, ...] = Field(min_length=1)
    topics: TopicNames = TopicNames()

    @model_validator(mode="after")
    def _rollups_use_capped_dimensions(self) -> PipelineSettings:
        names = [r.name for r in self.rollups]
        if len(names) != len(set(names)):
            raise ValueError("two roll-ups share a name")
        for rollup in self.rollups:
            for dim in rollup.dimensions:
                if dim in self.events.identifiers:
                    raise ValueError(
                        f"roll-up {rollup.name!r} uses {dim!r}, an unbounded identifier: its cardinality (and the "
                        "dataflow's memory) would have no limit; use a capped dimension from events.dimensions, and "
                        f"count distinct {dim} with the sketch instead"
                    )
                if dim not in self.events.dimensions:
                    raise ValueError(f"roll-up {rollup.name!r} uses {dim!r}, which events.dimensions does not declare")
            if len(set(rollup.dimensions)) != len(rollup.dimensions):
                raise ValueError(f"roll-up {rollup.name!r} names a dimension twice")
        for index, rollup in enumerate(self.rollups):
            if rollup.derived_from is not None:
                _check_derived(rollup, self.rollups[:index])
            if rollup.live_from is not None:
                _check_live_from(rollup, self.rollups[:index])
                live = self.rollup(rollup.live_from)
                need = rollup.window.size_s + self.windows.allowed_lateness_s
                if self.retention_ms(live) < 2 * need * 1000:
                    raise ValueError(f"roll-up {rollup.name!r} is live from {live.name!r}, whose tier keeps "
                                     f"{self.retention_ms(live) // 1000} s: it must keep at least twice the window "
                                     f"plus the allowed lateness ({2 * need} s)")  # fmt: skip
            if self.has_running_rows(rollup):
                need = rollup.window.size_s + self.windows.allowed_lateness_s
                if self.retention_ms_of("live") < 2 * need * 1000:
                    raise ValueError(f"roll-up {rollup.name!r} keeps its open windows in the live table, which keeps "
                                     f"{self.retention.live_min} min: it must keep at least twice the window plus "
                                     f"the allowed lateness ({math.ceil(2 * need / 60)} min)")  # fmt: skip
        s = self.sketches
        if s.distinct_field not in (*self.events.identifiers, *self.events.dimensions):
            raise ValueError(f"sketches.distinct_field {s.distinct_field!r} is not an identifier or dimension")
        if s.quantile_field not in self.events.metrics:
            raise ValueError(f"sketches.quantile_field {s.quantile_field!r} is not a declared metric")
        return self

    def root_of(self, rollup: Rollup) -> Rollup:
        """The roll-up folded from events that a derived roll-up is built from (itself if not derived)."""
        while rollup.derived_from is not None:
            rollup = self.rollup(rollup.derived_from)
        return rollup

    def final_only(self, rollup: Rollup) -> bool:
        """Its windows are published once, final (derived, or live from a finer roll-up): no running rows."""
        return rollup.derived_from is not None or rollup.live_from is not None

    def has_running_rows(self, rollup: Rollup) -> bool:
        """Its open windows are published while open (not final only): their running rows go to the live topic
        only (kept retention.live_min), its final rows and corrections to its tier's and, while the live table
        keeps the window, to the live one too (copies_to_live), where they supersede the running rows. Its tier's
        table then keeps one version of a window, and the live table the roll-up's last minutes whole
        (docs/architecture.md, "The live table")."""
        return not self.final_only(rollup)

    def copies_to_live(self, rollup: Rollup) -> bool:
        """Its final rows and corrections also go to the live topic (not when tests put both in one topic)."""
        return self.has_running_rows(rollup) and self.topics.live != self.table_of(rollup)

    def table_of(self, rollup: Rollup) -> str:
        """The topic, and the Pinot table reading it, that hold this roll-up's rows."""
        return self.topics.history if rollup.tier == "history" else self.topics.aggregates

    def publish_every_ms(self, rollup: Rollup) -> int:
        """How often the roll-up's changed open windows are re-published (its tier's interval)."""
        w = self.windows
        return int(1000 * (w.history_publish_every_s if rollup.tier == "history" else w.publish_every_s))

    def retention_ms(self, rollup: Rollup) -> int:
        return self.retention_ms_of(rollup.tier)

    def retention_ms_of(self, tier: str) -> int:
        """How long a tier's table keeps rows."""
        if tier == "live":
            return self.retention.live_min * 60_000
        return int((self.retention.history_h if tier == "history" else self.retention.recent_h) * 3_600_000)

    def rollup(self, name: str) -> Rollup:
        for rollup in self.rollups:
            if rollup.name == name:
                return rollup
        raise KeyError(name)

    @property
    def all_dimensions(self) -> tuple[str, ...]:
        """Every dimension some roll-up uses, in declaration order (the aggregates table's columns)."""
        used = {d for r in self.rollups for d in r.dimensions}
        return tuple(d for d in self.events.dimensions if d in used)


def _finer(rollup: Rollup, name: str, before: tuple[Rollup, ...], where: str) -> Rollup:
    """The finer roll-up `name` that `rollup` is built or read from: declared before it, both tumbling, and its
    window a divisor of rollup's (a coarse window is a union of finer ones)."""
    finer = next((r for r in before if r.name == name), None)
    if finer is None:
        raise ValueError(f"{where}, which is not a roll-up declared before it")
    if rollup.window.every_s is not None or finer.window.every_s is not None:
        raise ValueError(f"{where}: both must be tumbling (no every_s)")
    if rollup.window.size_s <= finer.window.size_s or rollup.window.size_s % finer.window.size_s:
        raise ValueError(f"{where}: its window must be a multiple of {finer.window.size_s} s, larger than it")
    return finer


def _check_derived(rollup: Rollup, before: tuple[Rollup, ...]) -> None:
    """A derived roll-up is built from a finer one (_finer) with the same dimensions in the same order (a merge
    shard holds a group's windows of both), in the same tier (one table: the dashboard reads a coarse window not
    yet final from its finer roll-up, and verify reads the caps from its rows)."""
    assert rollup.derived_from is not None
    where = f"roll-up {rollup.name!r} is derived from {rollup.derived_from!r}"
    source = _finer(rollup, rollup.derived_from, before, where)
    if source.dimensions != rollup.dimensions:
        raise ValueError(f"{where}: it must have the same dimensions in the same order, {list(source.dimensions)}")
    if source.tier != rollup.tier:
        raise ValueError(f"{where}: it must be in the same tier ({source.tier})")


def _check_live_from(rollup: Rollup, before: tuple[Rollup, ...]) -> None:
    """A final-only roll-up is read while open from a finer one (_finer), folded from events and published while
    open, with the same dimensions (its open windows are unions of the finer one's windows, read by the
    dashboard)."""
    assert rollup.live_from is not None
    where = f"roll-up {rollup.name!r} is live from {rollup.live_from!r}"
    if rollup.derived_from is not None:
        raise ValueError(f"{where}: a derived roll-up is final only already (its chain's first roll-up may be live "
                         "from another)")  # fmt: skip
    live = _finer(rollup, rollup.live_from, before, where)
    if live.derived_from is not None or live.live_from is not None:
        raise ValueError(f"{where}, which is published final only itself")
    if set(live.dimensions) != set(rollup.dimensions):
        raise ValueError(f"{where}: it must have the same dimensions, {sorted(live.dimensions)}")
