"""Final-only roll-ups (`live_from`): published once per window and group, final, never while open, with the
merge and without it, across a snapshot; what they count is what the same roll-up published while open counts;
a roll-up derived from one (the cascade) is unchanged; and with the merge their gains leave the partitions at
the close only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from livedash.pipeline.merge import MergeShard
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windows import PartitionWindows
from tests.dataflow_runs import BASE, settings
from tests.unit.pipeline.test_cascade import events_spec, run
from tests.unit.pipeline.test_merge import newest, parse, stream, totals, values

DIMS = ["type", "country"]
CFG = PipelineSettings.model_validate(
    {
        **settings().model_dump(exclude={"rollups", "events"}),
        "events": {**settings().events.model_dump(), "dimensions": {"type": 4, "country": 8}},
        "rollups": [
            {"name": "fine", "dimensions": DIMS, "window": {"size_s": 10}},
            {"name": "mid", "dimensions": DIMS, "window": {"size_s": 30}, "live_from": "fine"},
            {"name": "coarse", "dimensions": DIMS, "window": {"size_s": 60}, "from": "mid"},
            {"name": "twin_mid", "dimensions": DIMS, "window": {"size_s": 30}},
            {"name": "twin_coarse", "dimensions": DIMS, "window": {"size_s": 60}, "from": "twin_mid"},
        ],
    }
)
TWINS = {"mid": "twin_mid", "coarse": "twin_coarse"}


@hsettings(max_examples=40, deadline=None)
@given(spec=events_spec, cuts=st.lists(st.integers(0, 100), max_size=6), shards=st.integers(0, 2),
       snap=st.one_of(st.none(), st.integers(0, 6)))  # fmt: skip
def test_a_final_only_rollup_publishes_once_final_what_the_running_one_counts(
    spec: list[tuple[int, int, int, int, int]], cuts: list[int], shards: int, snap: int | None
) -> None:
    inp = stream(spec)
    rows = run(inp, 3, sorted({min(c, len(inp)) for c in cuts}), shards, snap, CFG)
    windows = [r for r in rows if r["kind"] == "window" and r["rollup_name"] in ("mid", "coarse")]
    assert all(r["is_final"] for r in windows), "a final-only window was published while open"
    assert len({r["pk"] for r in windows}) == len(windows), "a final-only window and group published twice"
    twin_rows = [r for r in rows if r["kind"] == "window" and r["rollup_name"] == "twin_mid"]
    assert any(not r["is_final"] for r in twin_rows), "the twin publishes running rows (the input has open windows)"
    got = totals([r for r in rows if r["is_final"] and r["kind"] == "window"] + newest(
        [r for r in rows if r["kind"] == "late"]))  # fmt: skip
    for mine, twin in TWINS.items():
        assert {k[1:]: v for k, v in got.items() if k[0] == mine} == {k[1:]: v for k, v in got.items() if k[0] == twin}
    assert sum(v[0] for k, v in got.items() if k[0] == "mid") == len(inp)


def test_with_the_merge_a_final_only_rollups_gains_leave_at_its_slots_and_its_row_once_final() -> None:
    """Phase one drains it as any roll-up (a slot's items and values, not a whole window's), and the shard holds
    what it merged until the window is final."""
    wins = PartitionWindows(CFG, 0, partials=True)
    shard = MergeShard(CFG, [0])
    names = [r.name for r in CFG.rollups]
    wins.add_batch([parse(BASE + s * 1000, "click", "DE", f"u{s}", 1.0) for s in (1, 2, 12)], [0, 1, 2])
    tick = wins.partials()
    assert {"fine", "mid", "twin_mid"} <= {names[p.rollup] for p in tick.partials}
    shard.fold(tick)
    assert {v["rollup_name"] for v in values(shard.publish())} == {"fine", "twin_mid"}
    wins.add_batch([parse(BASE + 36_000, "click", "DE", "u36", 1.0)], [3])  # mid [0, 30 s) closes (lateness 5 s)
    shard.fold(wins.partials())
    mid = [v for v in values(shard.publish()) if v["rollup_name"] == "mid"]
    assert [(v["window_start"] - BASE, v["event_count"], v["is_final"]) for v in mid] == [(0, 3, 1)]


def test_without_the_merge_a_final_only_window_shows_once_final() -> None:
    wins = PartitionWindows(CFG, 0)
    wins.add_batch([parse(BASE + s * 1000, "click", "DE", f"u{s}", 1.0) for s in (1, 12, 29)], [0, 1, 2])
    open_rows = values(wins.publish())
    assert {v["rollup_name"] for v in open_rows} >= {"fine", "twin_mid"}
    assert not [v for v in open_rows if v["rollup_name"] == "mid"]
    wins.add_batch([parse(BASE + 36_000, "click", "DE", "u36", 1.0)], [3])
    mid = [v for v in values(wins.publish()) if v["rollup_name"] == "mid"]
    assert [(v["window_start"] - BASE, v["event_count"], v["is_final"]) for v in mid] == [(0, 3, 1)]


@pytest.mark.parametrize(
    ("rollup", "problem"),
    [
        ({"name": "m", "dimensions": DIMS, "window": {"size_s": 60}, "live_from": "nope"}, "not a roll-up declared"),
        ({"name": "m", "dimensions": ["type"], "window": {"size_s": 60}, "live_from": "fine"}, "same dimensions"),
        ({"name": "m", "dimensions": DIMS, "window": {"size_s": 25}, "live_from": "fine"}, "multiple of 10 s"),
        ({"name": "m", "dimensions": DIMS, "window": {"size_s": 60, "every_s": 30}, "live_from": "fine"}, "tumbling"),
        ({"name": "m", "dimensions": DIMS, "window": {"size_s": 60}, "live_from": "mid"}, "final only itself"),
        (
            {"name": "m", "dimensions": DIMS, "window": {"size_s": 60}, "live_from": "fine", "from": "mid"},
            "derived roll-up is final only",
        ),
        ({"name": "m", "dimensions": DIMS, "window": {"size_s": 36000}, "live_from": "fine"}, "at least twice"),
    ],
)
def test_a_final_only_rollup_that_cannot_be_read_live_from_its_source_is_refused(rollup: dict[str, Any],
                                                                                 problem: str) -> None:  # fmt: skip
    base = CFG.model_dump(exclude={"rollups"})
    base["retention"] = {"recent_h": 6, "history_h": 720}
    rollups = [{"name": "fine", "dimensions": DIMS, "window": {"size_s": 10}},
               {"name": "mid", "dimensions": DIMS, "window": {"size_s": 30}, "live_from": "fine"}]  # fmt: skip
    with pytest.raises(ValidationError, match=problem):
        PipelineSettings.model_validate({**base, "rollups": [*rollups, rollup]})
    PipelineSettings.model_validate({**base, "rollups": rollups})  # the two alone are fine
