"""The cascade (livedash.pipeline.cascade): derived roll-ups built from finer final windows count exactly what a
roll-up of the same window folded from the events counts (window rows and late corrections together), with
and without the merge, across a snapshot; they publish each window once, final, and only once final."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from livedash.pipeline.merge import MergeShard, split
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windows import PartitionWindows
from tests.dataflow_runs import BASE, settings
from tests.unit.pipeline.test_merge import Input, newest, parse, stream, totals, values

DIMS = ["type", "country"]
CFG = PipelineSettings.model_validate(
    {
        **settings().model_dump(exclude={"rollups", "events"}),
        # caps that never bind here: a derived window takes its finer windows' caps, a direct one its own
        "events": {**settings().events.model_dump(), "dimensions": {"type": 4, "country": 8}},
        "rollups": [
            {"name": "fine", "dimensions": DIMS, "window": {"size_s": 10}},
            {"name": "mid", "dimensions": DIMS, "window": {"size_s": 30}, "from": "fine"},
            {"name": "coarse", "dimensions": DIMS, "window": {"size_s": 60}, "from": "mid"},
            {"name": "direct_mid", "dimensions": DIMS, "window": {"size_s": 30}},
            {"name": "direct_coarse", "dimensions": DIMS, "window": {"size_s": 60}},
        ],
    }
)
TWINS = {"mid": "direct_mid", "coarse": "direct_coarse"}


def run(inp: Input, partitions: int, ticks: list[int], shards: int, snapshot_at: int | None,
        cfg: PipelineSettings = CFG) -> list[dict[str, Any]]:  # fmt: skip
    """Every row published, per partition (shards 0) or merged; a snapshot and restore after batch snapshot_at."""
    parts = list(range(partitions))
    names = [r.name for r in cfg.rollups]
    wins = {p: PartitionWindows(cfg, p, partials=shards > 0) for p in parts}
    merge = [MergeShard(cfg, parts) for _ in range(shards)]
    rows = []

    def tick() -> None:
        for w in wins.values():
            if shards:
                for shard, part in zip(merge, split(w.partials(), names, shards), strict=True):
                    shard.fold(part)
                rows.extend(w.late_rows())
            else:
                rows.extend(w.publish())
        for shard in merge:
            rows.extend(shard.publish())

    for i, (lo, hi) in enumerate(zip([0, *ticks], [*ticks, len(inp)], strict=True)):
        for p, w in wins.items():
            mine = [(o, e) for q, o, e in inp[lo:hi] if q == p]
            if mine:
                w.add_batch([e for _, e in mine], [o for o, _ in mine])
        if i == snapshot_at:
            state = pickle.loads(pickle.dumps(({p: w.snapshot() for p, w in wins.items()},
                                               [m.snapshot() for m in merge])))  # fmt: skip
            wins = {p: PartitionWindows.restore(cfg, p, s, partials=shards > 0) for p, s in state[0].items()}
            merge = [MergeShard.restore(cfg, s) for s in state[1]]
        tick()
    for w in wins.values():
        w.advance_idle(BASE + 10**7)
    tick()
    return values(rows)


events_spec = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 200), st.integers(0, 1), st.integers(0, 3), st.integers(0, 30)),
    min_size=1,
    max_size=100,
)


@hsettings(max_examples=40, deadline=None)
@given(spec=events_spec, cuts=st.lists(st.integers(0, 100), max_size=6), shards=st.integers(0, 2),
       snap=st.one_of(st.none(), st.integers(0, 6)))  # fmt: skip
def test_derived_windows_count_what_windows_folded_from_the_events_count(
    spec: list[tuple[int, int, int, int, int]], cuts: list[int], shards: int, snap: int | None
) -> None:
    """Out-of-order input (times 0-200 s, lateness 5 s: many late events), any ticks, per partition or merged,
    with a snapshot anywhere: each derived window's rows (final window rows and the newest late corrections)
    hold what the same window folded from the events holds."""
    inp = stream(spec)
    rows = run(inp, 3, sorted({min(c, len(inp)) for c in cuts}), shards, snap)
    finals = [r for r in rows if r["is_final"] and r["kind"] == "window"]
    late = newest([r for r in rows if r["kind"] == "late"])
    got = totals(finals + late)
    for derived, direct in TWINS.items():
        mine = {k[1:]: v for k, v in got.items() if k[0] == derived}
        theirs = {k[1:]: v for k, v in got.items() if k[0] == direct}
        assert mine == theirs, derived
    assert sum(v[0] for k, v in got.items() if k[0] == "coarse") == len(inp)


def test_derived_windows_go_out_once_final_and_only_once_their_finer_windows_are_final() -> None:
    wins = PartitionWindows(CFG, 0)
    offset = 0
    seen: list[dict[str, Any]] = []

    def feed(*secs: int) -> list[dict[str, Any]]:
        nonlocal offset
        evs = [parse(BASE + s * 1000, "click", "DE", f"u{s}", 1.0) for s in secs]
        wins.add_batch(evs, list(range(offset, offset + len(evs))))
        offset += len(evs)
        out = [v for v in values(wins.publish()) if v["rollup_name"] in ("mid", "coarse")]
        seen.extend(out)
        return out

    assert feed(1, 12, 29) == []  # mid [0, 30 s) open
    assert feed(34) == []  # the watermark at 34 s: fine is final up to 20 s (lateness 5 s), mid not yet
    out = feed(36)  # fine final up to 30 s: mid [0, 30 s) is final
    assert [(v["rollup_name"], v["window_start"] - BASE, v["event_count"], v["is_final"]) for v in out] == [
        ("mid", 0, 3, 1)
    ]
    feed(62, 64, 66)
    wins.advance_idle(BASE + 10**7)
    seen.extend(v for v in values(wins.publish()) if v["rollup_name"] in ("mid", "coarse"))
    assert all(v["is_final"] for v in seen)
    assert len({v["pk"] for v in seen}) == len(seen), "one row per derived window and group"
    assert {(v["rollup_name"], v["window_start"] - BASE): v["event_count"] for v in seen} == {
        ("mid", 0): 3, ("mid", 30_000): 2, ("mid", 60_000): 3, ("coarse", 0): 5, ("coarse", 60_000): 3
    }  # fmt: skip


def test_an_event_late_for_its_finer_window_is_a_correction_of_every_derived_window() -> None:
    """[0, 10 s) of fine is final when the event at 3 s comes; mid [0, 30 s) is still open, but its value is
    built from fine's final windows, so the event counts there through a correction row, as in fine."""
    wins = PartitionWindows(CFG, 0)
    rows = values(wins.publish())
    wins.add_batch([parse(BASE + s * 1000, "click", "DE", f"u{s}", 1.0) for s in (1, 20)], [0, 1])
    late = wins.add_batch([parse(BASE + 3000, "click", "DE", "u3", 1.0)], [2])
    assert len(late) == 1
    wins.advance_idle(BASE + 10**7)
    rows += values(wins.publish())
    corrections = {(v["rollup_name"], v["window_start"] - BASE) for v in rows if v["kind"] == "late"}
    assert corrections == {("fine", 0), ("mid", 0), ("coarse", 0)}
    window = {(v["rollup_name"], v["window_start"] - BASE): v["event_count"] for v in rows if v["kind"] == "window"
              and v["is_final"]}  # fmt: skip
    assert window[("mid", 0)] == 2 and window[("coarse", 0)] == 2 and window[("direct_mid", 0)] == 3


@pytest.mark.parametrize(
    ("rollup", "problem"),
    [
        ({"name": "d", "dimensions": DIMS, "window": {"size_s": 60}, "from": "nope"}, "not a roll-up declared before"),
        ({"name": "d", "dimensions": ["country", "type"], "window": {"size_s": 60}, "from": "fine"}, "same dimensions"),
        ({"name": "d", "dimensions": DIMS, "window": {"size_s": 60}, "tier": "history", "from": "fine"}, "same tier"),
        ({"name": "d", "dimensions": DIMS, "window": {"size_s": 25}, "from": "fine"}, "multiple of 10 s"),
        ({"name": "d", "dimensions": DIMS, "window": {"size_s": 10}, "from": "fine"}, "multiple of 10 s"),
        ({"name": "d", "dimensions": DIMS, "window": {"size_s": 60, "every_s": 30}, "from": "fine"}, "tumbling"),
        ({"name": "d", "dimensions": ["type"], "window": {"size_s": 60}, "from": "slide"}, "tumbling"),
    ],
)
def test_a_derived_rollup_that_cannot_be_built_from_its_source_is_refused(rollup: dict[str, Any], problem: str) -> None:
    base = CFG.model_dump(exclude={"rollups"})
    rollups = [{"name": "fine", "dimensions": DIMS, "window": {"size_s": 10}},
               {"name": "slide", "dimensions": ["type"], "window": {"size_s": 30, "every_s": 10}}]  # fmt: skip
    with pytest.raises(ValidationError, match=problem):
        PipelineSettings.model_validate({**base, "rollups": [*rollups, rollup]})
