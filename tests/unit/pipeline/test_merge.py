"""The two-phase merge (livedash.pipeline.merge): per-partition partials folded by shards into one row per window
and group must count exactly what the per-partition rows count together, after any split into ticks, shards and
a snapshot anywhere; a window is final only once every partition closed it; versions only grow."""

from __future__ import annotations

import pickle
from collections import defaultdict
from typing import Any

import datasketches as ds
import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from livedash.pipeline.aggregates import unpack_state
from livedash.pipeline.contract import Event, Validator
from livedash.pipeline.merge import MERGED, NO_BOUND, MergeShard, shard_of, split
from livedash.pipeline.rows import DBL_MAX, Row
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windows import PartitionWindows
from tests.dataflow_runs import BASE, LATENESS_S, event, settings, tables

# The flow's two roll-ups, and two derived ones (the cascade, a chain): the same counts merged or not
CFG = PipelineSettings.model_validate(
    {
        **settings().model_dump(exclude={"rollups"}),
        "rollups": [
            *(r.model_dump() for r in settings().rollups),
            {"name": "tumble_30s", "dimensions": ["type", "country"], "window": {"size_s": 30}, "from": "tumble_10s"},
            {"name": "tumble_60s", "dimensions": ["type", "country"], "window": {"size_s": 60}, "from": "tumble_30s"},
        ],
    }
)
VALIDATOR = Validator(CFG.events)
NAMES = [r.name for r in CFG.rollups]


def parse(ts: int, kind: str, country: str, user: str, latency: float) -> Event:
    got = VALIDATOR.parse(event(ts, kind=kind, country=country, user=user, latency=latency), ts)
    assert isinstance(got, Event), got
    return got


Input = list[tuple[int, int, Event]]  # (partition, offset, event), in arrival order


def stream(spec: list[tuple[int, int, int, int, int]]) -> Input:
    """(partition, seconds after BASE, type, country, user) -> events with offsets per partition."""
    offsets: dict[int, int] = defaultdict(int)
    out = []
    for p, sec, t, c, u in spec:
        ts = BASE + sec * 1000 + u  # distinct times within a second: distinct event ids
        out.append((p, offsets[p], parse(ts, ["click", "view"][t], ["DE", "FR", "US", "PL"][c], f"u{u}", float(sec))))
        offsets[p] += 1
    return out


def every(rows: list[Row]) -> list[dict[str, Any]]:
    """Every row, the live table's copies too."""
    return [orjson.loads(r.value) for r in rows]


def values(rows: list[Row]) -> list[dict[str, Any]]:
    """The rows as their tables hold them together (not the live table's copies of final rows)."""
    return [row for _, row in tables(rows)]


def newest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Pinot's upsert keeps: each key's row with the highest version (a block's corrections grow)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["pk"] not in best or r["version"] >= best[r["pk"]]["version"]:
            best[r["pk"]] = r
    return list(best.values())


def totals(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[Any]]:
    """Per (roll-up, window, group): count, latency sum, min, max and the union of the distinct sketches."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        key = (r["rollup_name"], r["window_start"], r["type"], r["country"])
        t = out.setdefault(key, [0, 0.0, float("inf"), float("-inf"), ds.theta_union(12)])
        t[0] += r["event_count"]
        if r["latency_ms_count"]:
            t[1] += r["latency_ms_sum"]
            t[2] = min(t[2], r["latency_ms_min"])
            t[3] = max(t[3], r["latency_ms_max"])
        t[4].update(ds.compact_theta_sketch.deserialize(bytes.fromhex(r["distinct_theta"])))
    return {
        k: [n, pytest.approx(s), lo, hi, round(u.get_result().get_estimate())] for k, (n, s, lo, hi, u) in out.items()
    }


def per_partition(inp: Input, partitions: int, ticks: list[int]) -> list[dict[str, Any]]:
    """Today's design: one PartitionWindows per partition, rows per partition, final ones and corrections."""
    wins = {p: PartitionWindows(CFG, p) for p in range(partitions)}
    out: list[Row] = []
    for lo, hi in zip([0, *ticks], [*ticks, len(inp)], strict=True):
        for p, w in wins.items():
            batch = [(o, e) for q, o, e in inp[lo:hi] if q == p]
            if batch:
                w.add_batch([e for _, e in batch], [o for o, _ in batch])
            out += w.publish()
    for w in wins.values():
        w.advance_idle(BASE + 10**7)
        out += w.publish()
    rows = newest(values(out))
    return [r for r in rows if r["is_final"] and (r["kind"] == "late" or r["source_partition"] >= 0)]


class Merged:
    """Phase one per partition and `shards` merge shards, fed batch by batch, each batch then a tick."""

    def __init__(self, partitions: int, shards: int) -> None:
        self.parts = list(range(partitions))
        self.shards = shards
        self.wins = {p: PartitionWindows(CFG, p, partials=True) for p in self.parts}
        self.merge = [MergeShard(CFG, self.parts) for _ in range(shards)]
        self.rows: list[Row] = []

    def tick(self) -> None:
        for w in self.wins.values():
            for shard, part in zip(self.merge, split(w.partials(), NAMES, self.shards), strict=True):
                shard.fold(part)
            self.rows += w.late_rows()  # corrections, per partition
        for shard in self.merge:
            self.rows += shard.publish()

    def add(self, batch: Input) -> None:
        for p, w in self.wins.items():
            mine = [(o, e) for q, o, e in batch if q == p]
            if mine:
                w.add_batch([e for _, e in mine], [o for o, _ in mine])

    def feed(self, batch: Input) -> None:
        self.add(batch)
        self.tick()

    def restart(self) -> None:
        state = pickle.dumps(({p: w.snapshot() for p, w in self.wins.items()}, [m.snapshot() for m in self.merge]))
        wins, merge = pickle.loads(state)
        self.wins = {p: PartitionWindows.restore(CFG, p, s, partials=True) for p, s in wins.items()}
        self.merge = [MergeShard.restore(CFG, s) for s in merge]

    def finish(self) -> None:
        for w in self.wins.values():
            w.advance_idle(BASE + 10**7)
        self.tick()


def merged(inp: Input, partitions: int, ticks: list[int], shards: int, snapshot_at: int | None = None) -> Merged:
    """With snapshot_at: everything snapshotted (pickled, as Bytewax does) after that batch went in and before
    its tick, and restored into new objects (a crash and a resume)."""
    m = Merged(partitions, shards)
    for i, (lo, hi) in enumerate(zip([0, *ticks], [*ticks, len(inp)], strict=True)):
        m.add(inp[lo:hi])
        if i == snapshot_at:
            m.restart()
        m.tick()
    m.finish()
    return m


events_spec = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 90), st.integers(0, 1), st.integers(0, 3), st.integers(0, 40)),
    min_size=1,
    max_size=120,
)


@hsettings(max_examples=40, deadline=None)
@given(spec=events_spec, cuts=st.lists(st.integers(0, 120), max_size=8), shards=st.integers(1, 3),
       snap=st.one_of(st.none(), st.integers(0, 8)))  # fmt: skip
def test_merged_rows_count_what_the_partitions_rows_count_together(
    spec: list[tuple[int, int, int, int, int]], cuts: list[int], shards: int, snap: int | None
) -> None:
    inp = stream(spec)
    ticks = sorted({min(c, len(inp)) for c in cuts})
    expected = totals(per_partition(inp, 4, ticks))
    m = merged(inp, 4, ticks, shards, snap)
    rows = values(m.rows)
    finals = [r for r in rows if r["is_final"] and r["kind"] == "window"]
    assert all(r["source_partition"] == MERGED for r in finals)
    keys = [(r["rollup_name"], r["window_start"], r["type"], r["country"]) for r in finals]
    assert len(keys) == len(set(keys)), "one final row per window and group"
    late = newest([r for r in rows if r["kind"] == "late"])
    assert totals(finals + late) == expected


@hsettings(max_examples=25, deadline=None)
@given(spec=events_spec, cuts=st.lists(st.integers(0, 120), max_size=8))
def test_versions_only_grow_and_the_final_row_is_the_newest(
    spec: list[tuple[int, int, int, int, int]], cuts: list[int]
) -> None:
    inp = stream(spec)
    m = merged(inp, 4, sorted({min(c, len(inp)) for c in cuts}), shards=2)
    by_key: dict[bytes, list[dict[str, Any]]] = defaultdict(list)
    for row in m.rows:
        value = orjson.loads(row.value)
        if value["kind"] == "window" and (row.role != "live" or not value["is_final"]):  # not the live copies
            by_key[row.key].append(value)
    assert by_key
    for versions in by_key.values():
        assert [v["version"] for v in versions] == sorted(v["version"] for v in versions)
        assert versions[-1]["is_final"] == 1 and sum(v["is_final"] for v in versions) == 1
        assert all(v["version"] == 2 * v["event_count"] + v["is_final"] for v in versions)


def test_a_window_is_final_only_once_every_partition_closed_it() -> None:
    m = Merged(partitions=2, shards=1)
    m.feed(stream([(0, 1, 0, 0, 1), (1, 2, 0, 0, 2)]))
    m.feed(stream([(0, 40, 0, 0, 3)]))  # partition 0's watermark passes [0, 10 s) + lateness; partition 1's not
    tumble = [v for v in values(m.rows) if v["rollup_name"] == "tumble_10s" and v["window_start"] == BASE]
    assert tumble and not any(v["is_final"] for v in tumble)
    assert max(v["event_count"] for v in tumble) == 2  # both partitions' events in one row
    m.wins[1].advance_idle(BASE + 40_000)
    m.tick()
    final = [v for v in values(m.rows) if v["rollup_name"] == "tumble_10s" and v["window_start"] == BASE
             and v["is_final"]]  # fmt: skip
    assert [v["event_count"] for v in final] == [2]


def test_an_event_late_in_one_partition_counts_once_in_a_sliding_window_the_other_keeps_open() -> None:
    """Partition 0 closes the sliding window [-20 s, 10 s), then gets an event at 5 s: late for that window (a
    correction row), on time for [0, 30 s), still open. The merged final of [-20 s, 10 s), published only when
    partition 1 closes it too, must not count the event a second time."""
    m = Merged(partitions=2, shards=1)
    m.feed(stream([(0, 1, 0, 0, 1), (1, 2, 0, 0, 2), (0, 20, 0, 0, 3)]))  # p0's watermark 20 s: closes up to 15 s
    m.feed(stream([(0, 5, 0, 0, 4)]))
    m.finish()
    rows = values(m.rows)
    slide = {v["window_start"]: v for v in rows if v["rollup_name"] == "slide_30s" and v["is_final"]
             and v["kind"] == "window"}  # fmt: skip
    late = [v for v in rows if v["rollup_name"] == "slide_30s" and v["kind"] == "late"]
    assert [v["window_start"] for v in late] == [BASE - 20_000]
    assert slide[BASE - 20_000]["event_count"] == 2  # the two on-time events; the late one is the correction
    assert slide[BASE]["event_count"] == 4  # 1, 2, 5 and 20 s: on time for [0, 30 s) everywhere


def test_shards_split_groups_not_windows() -> None:
    """Every pane of a group goes to one shard (a sliding window is built from several panes)."""
    assert {shard_of("slide_30s", ("click",), 4) for _ in range(3)} == {shard_of("slide_30s", ("click",), 4)}
    m = merged(stream([(p, s, 0, 0, s) for s in range(0, 60, 3) for p in range(2)]), 2, [10, 20, 30], shards=3)
    by_group = defaultdict(set)
    for shard in range(3):
        for r in values(m.rows):
            if r["kind"] == "window" and shard_of(r["rollup_name"], (r["type"],) if r["rollup_name"] == "slide_30s"
                                                   else (r["type"], r["country"]), 3) == shard:  # fmt: skip
                by_group[(r["rollup_name"], r["type"], r["country"])].add(shard)
    assert by_group and all(len(s) == 1 for s in by_group.values())


def test_a_partial_for_a_pane_already_final_is_refused() -> None:
    m = Merged(partitions=1, shards=1)
    m.feed(stream([(0, 1, 0, 0, 1), (0, 40, 0, 0, 2)]))
    stale = m.wins[0].partials()
    stale = stale._replace(partials=[p._replace(pane_start=BASE) for p in stream_partials()])
    with pytest.raises(ValueError, match="after its windows were final"):
        m.merge[0].fold(stale)


def stream_partials() -> list[Any]:
    w = PartitionWindows(CFG, 0, partials=True)
    w.add_batch([stream([(0, 1, 0, 0, 1)])[0][2]], [0])
    return [p for p in w.partials().partials if NAMES[p.rollup] == "tumble_10s"]


def test_a_snapshot_between_a_batch_and_its_tick_keeps_the_gains_of_the_panes_it_closed() -> None:
    """The batch fills [0, 10 s) and closes it in both partitions: the panes are dropped, and what they gained
    waits for the tick."""
    inp = stream([(0, 1, 0, 0, 1), (1, 2, 0, 0, 2), (0, 30, 0, 0, 3), (1, 31, 0, 0, 4)])
    expected = totals(per_partition(inp, 2, []))
    m = merged(inp, 2, [], shards=2, snapshot_at=0)
    finals = [r for r in values(m.rows) if r["is_final"]]
    assert totals(finals) == expected
    assert expected[("tumble_10s", BASE, "click", "DE")][0] == 2


def test_ended_windows_publish_their_late_gains_at_the_late_cadence_and_open_ones_every_tick() -> None:
    """A window that has ended changes only through late events: its running rows go out every
    late_publish_every_s (10 s) however many ticks bring it some; the open window's go out at every tick, and
    the final row still counts everything."""
    cfg = settings(allowed_lateness_s=120, late_publish_every_s=10)
    wins = PartitionWindows(cfg, 0, partials=True)
    shard = MergeShard(cfg, [0])
    names = [r.name for r in cfg.rollups]
    offset = 0
    published: dict[int, list[int]] = defaultdict(list)  # window start -> ticks that published it (tumble_10s)
    last: dict[int, int] = {}

    def tick(i: int, secs: list[int]) -> None:
        nonlocal offset
        evs = [parse(BASE + s * 1000 + j, "click", "DE", f"u{j}", 1.0) for j, s in enumerate(secs)]
        wins.add_batch(evs, list(range(offset, offset + len(evs))))
        offset += len(evs)
        (part,) = split(wins.partials(), names, 1)
        shard.fold(part)
        shard.now_ms = BASE + 40_000 + i * 1000  # the wall clock: a tick a second
        for v in values(shard.publish()):
            if v["rollup_name"] == "tumble_10s":
                published[v["window_start"]].append(i)
                last[v["window_start"]] = v["event_count"]

    tick(0, [1, 35])  # [0, 10 s) ends (the watermark is at 35 s); [30, 40 s) is open
    for i in range(1, 25):
        tick(i, [3, 35 + i // 3])  # each tick: an event late for [0, 10 s), and one on time
    assert published[BASE] == [0, 10, 20]  # every 10 s, not every tick
    assert published[BASE + 30_000] == list(range(0, 15))  # the open window: every tick, until it ends at 45 s
    assert 15 in published[BASE + 40_000]  # [40, 50 s) opened at tick 15
    assert last[BASE] == 21  # tick 20's row: the events up to then
    wins.advance_idle(BASE + 10**7)
    (part,) = split(wins.partials(), names, 1)
    shard.fold(part)
    final = [v for v in values(shard.publish()) if v["rollup_name"] == "tumble_10s" and v["window_start"] == BASE]
    assert [(v["event_count"], v["is_final"]) for v in final] == [(25, True)]


def test_a_window_a_slower_partition_still_fills_on_time_publishes_every_tick_until_every_partition_passed_it() -> None:
    """A window has ended only once every partition's watermark is past it: partition 1, a few seconds behind
    partition 0, still sends on-time events for [0, 10 s), and they go out at every tick. By the fastest
    partition's watermark they waited for the late cadence (10 s): the last bucket of a live series was short
    for up to 10 s. Once both partitions are past it, its (late) gains go at the late cadence again."""
    cfg = settings(allowed_lateness_s=120, late_publish_every_s=10)
    wins = {p: PartitionWindows(cfg, p, partials=True) for p in (0, 1)}
    shard = MergeShard(cfg, [0, 1])
    names = [r.name for r in cfg.rollups]
    offsets = {0: 0, 1: 0}
    published: list[int] = []  # ticks that published [0, 10 s) of tumble_10s
    current: list[int] = []  # ticks that published the sliding window current by partition 0 (the fastest)

    def send(p: int, secs: list[int]) -> None:
        evs = [parse(BASE + s * 1000 + offsets[p], "click", "DE", f"u{p}-{offsets[p]}", 1.0) for s in secs]
        wins[p].add_batch(evs, list(range(offsets[p], offsets[p] + len(evs))))
        offsets[p] += len(evs)
        (part,) = split(wins[p].partials(), names, 1)
        shard.fold(part)

    send(0, [1, 35])  # partition 0's watermark at 35 s: [0, 10 s) has ended there
    for i in range(1, 16):
        send(0, [35 + i])
        send(1, [min(i, 9)] if i < 8 else [3, 10 + i])  # on time in [0, 10 s) until tick 7, then past it (late: 3 s)
        shard.now_ms = BASE + 60_000 + i * 1000  # the wall clock: a tick a second
        out = values(shard.publish())
        if any(v["rollup_name"] == "tumble_10s" and v["window_start"] == BASE for v in out):
            published.append(i)
        fastest = BASE + (35 + i) * 1000 + offsets[0] - 1  # partition 0's watermark (its newest event)
        if any(v["rollup_name"] == "slide_30s" and 0 < v["window_end"] - fastest <= 10_000 for v in out):
            current.append(i)
    assert published[:7] == list(range(1, 8))  # partition 1 still fills it on time: every tick
    assert published[7:] == [11]  # both past it: its late gains at the late cadence (10 s after tick 1)
    assert current == list(range(1, 16))  # current by the fastest partition, however far behind partition 1 is


def test_the_history_tier_leaves_phase_one_at_its_slots_and_the_shard_publishes_it_after_them() -> None:
    """A history roll-up's gains are drained at the multiples of history_publish_every_s by the wall clock, not
    every tick (a coarse window's group was sent every second, half the partials), the shard publishes them two
    ticks later, the recent tier stays every tick, and the final rows count every event. Running rows go to the
    live table, final rows to the tier's and the live one."""
    cfg = PipelineSettings.model_validate(
        {
            **settings(history_publish_every_s=5, allowed_lateness_s=2).model_dump(exclude={"rollups"}),
            "rollups": [
                {"name": "fine", "dimensions": ["type"], "window": {"size_s": 10}},
                {"name": "coarse", "dimensions": ["type", "country"], "window": {"size_s": 30}, "tier": "history"},
            ],
        }
    )
    names = [r.name for r in cfg.rollups]
    wins = PartitionWindows(cfg, 0, partials=True)
    shard = MergeShard(cfg, [0])
    sent: dict[str, list[int]] = defaultdict(list)  # roll-up -> ticks whose partials held it
    running: dict[str, list[int]] = defaultdict(list)  # roll-up -> ticks at which the shard published it
    wall = BASE + 100_003  # the wall clock, a tick a second, not on a slot
    rows: list[dict[str, Any]] = []
    roles: set[tuple[str, str, int]] = set()
    for i in range(14):
        wins.now_ms = shard.now_ms = wall + i * 1000
        wins.add_batch([parse(BASE + i * 1000, "click", ["DE", "FR"][i % 2], f"u{i}", 1.0)], [i])
        whole = wins.partials()
        for name in sorted({names[p.rollup] for p in whole.partials}):
            sent[name].append(i)
        (part,) = split(whole, names, 1)
        shard.fold(part)
        published = shard.publish()
        roles.update(
            (r.role, v["rollup_name"], v["is_final"]) for r, v in zip(published, every(published), strict=True)
        )
        for v in values(published):
            rows.append(v)
            if not v["is_final"]:
                running[v["rollup_name"]].append(i)
    assert sent["fine"] == list(range(14))
    assert sent["coarse"] == [0, 5, 10]  # the first tick, then at the slots of 105 and 110 s of the wall clock
    assert sorted(set(running["coarse"])) == [0, 7, 12]  # 2 s after each slot
    assert sorted(set(running["fine"])) == list(range(14))
    wins.advance_idle(BASE + 10**7)
    (part,) = split(wins.partials(), names, 1)
    shard.fold(part)
    published = shard.publish()
    roles.update((r.role, v["rollup_name"], v["is_final"]) for r, v in zip(published, every(published), strict=True))
    coarse_finals = [r for r in published if r.role == "history"]
    assert coarse_finals and sorted(coarse_finals) == sorted(
        r._replace(role="history")
        for r in published
        if r.role == "live" and orjson.loads(r.value)["rollup_name"] == "coarse"
    )  # the same final rows in its tier and the live table
    assert roles == {("live", "fine", 0), ("aggregates", "fine", 1), ("live", "fine", 1), ("live", "coarse", 0),
                     ("history", "coarse", 1), ("live", "coarse", 1)}, roles  # fmt: skip
    rows.extend(values(published))
    final = {v["pk"]: v for v in rows if v["is_final"]}  # one final row per window and group
    assert sum(v["event_count"] for v in final.values() if v["rollup_name"] == "coarse") == 14
    assert sum(v["event_count"] for v in final.values() if v["rollup_name"] == "fine") == 14


def test_a_tumbling_pane_keeps_one_segment_however_often_closed_upto_moves() -> None:
    """Gains sent under different closed_upto bounds, each before the pane's window ends, count for the same
    (only) window: the shard keeps them in one group, not one per bound (8 per pane, merged at every publish)."""
    m = Merged(partitions=1, shards=1)
    tumble = m.merge[0].rollups[NAMES.index("tumble_10s")]
    tumble_bounds: set[int] = set()
    for sec in range(0, 100, 2):  # the watermark moves on, closed_upto with it; each pane also gains a while after
        m.feed(stream([(0, sec, 0, 0, sec), (0, max(0, sec - LATENESS_S + 1), 0, 0, sec + 1)]))  # (never late)
        tumble_bounds |= {bound for segments in tumble.panes.values() for bound in segments}
    assert tumble_bounds == {NO_BOUND}
    m.finish()
    finals = [v for v in values(m.rows) if v["rollup_name"] == "tumble_10s" and v["is_final"]]
    assert sum(v["event_count"] for v in finals if v["kind"] == "window") == 100


def older_form(wins: dict[int, dict[str, Any]], shards: list[dict[str, Any]]) -> None:
    """Snapshots as the code before pane buffers wrote them (in place): phase one's panes as tuples with a dict of
    groups (a drained group in the full form), the shards' panes as dicts and their sources apart."""
    n = len(CFG.events.metrics)
    for state in wins.values():
        for saved in state["rollups"]:
            for ps, packed in saved["panes"].items():
                groups, admitted, route, retired = unpack_state(packed)
                full = {
                    tuple(dims): (0, [0.0] * n, [DBL_MAX] * n, [-DBL_MAX] * n, [0] * n, [], [], st[1], 0)
                    if len(st) == 2
                    else tuple(st)
                    for dims, st in groups
                }
                saved["panes"][ps] = (full, [set(a) for a in admitted], [(tuple(r), h) for r, h in route], retired)
    for state in shards:
        for saved in state["rollups"]:
            saved["sources"] = {}
            for ps, packed in saved["panes"].items():
                segments, sources = unpack_state(packed)
                saved["panes"][ps] = {after: {tuple(d): tuple(st) for d, st in groups} for after, groups in segments}
                saved["sources"][ps] = {tuple(d): set(p) for d, p in sources}


def test_a_snapshot_in_the_older_form_restores_to_the_same_rows() -> None:
    """Snapshots written before each pane became one msgpack buffer still restore (the recovery directory kept
    its name), to the same final rows as a run without the restart."""
    spec = [(p, s, s % 2, (7 * s + p) % 4, (13 * s + p) % 40) for s in range(90) for p in range(3)]
    spec += [(p, s, 0, 1, 7) for s in range(10, 60, 5) for p in range(3)]  # late, in the partitions and the shards
    inp = stream(spec)
    ticks = list(range(20, len(inp), 20))
    whole = merged(inp, 3, ticks, shards=2)
    m = Merged(3, 2)
    half = len(ticks) // 2
    for lo, hi in zip([0, *ticks[:half]], ticks[: half + 1], strict=True):
        m.feed(inp[lo:hi])
    wins = {p: w.snapshot() for p, w in m.wins.items()}
    shards = [s.snapshot() for s in m.merge]
    older_form(wins, shards)
    assert any(isinstance(pane, tuple) for s in wins.values() for r in s["rollups"] for pane in r["panes"].values())
    wins, shards = pickle.loads(pickle.dumps((wins, shards)))
    m.wins = {p: PartitionWindows.restore(CFG, p, s, partials=True) for p, s in wins.items()}
    m.merge = [MergeShard.restore(CFG, s) for s in shards]
    for lo, hi in zip(ticks[half:], [*ticks[half + 1 :], len(inp)], strict=True):
        m.feed(inp[lo:hi])
    m.finish()

    def finals(rows: list[Row]) -> dict[tuple[Any, ...], list[Any]]:
        return totals([r for r in newest(values(rows)) if r["is_final"]])

    assert finals(m.rows) == finals(whole.rows)
