"""Duplicates by event_id: the dataflow's bulk Dedup against verify's one-event-at-a-time replay of the rule,
whatever the batching, and the rule's edges. No servers."""

from __future__ import annotations

import itertools
import pickle

import msgspec
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from livedash.pipeline.dedup import Dedup
from livedash.verify.recount import SeenIds

BASE = 1_800_000_000_000
HORIZON_S = 60  # buckets of 6 s


class Ev(msgspec.Struct):
    event_id: str
    ts: int


def reference(events: list[Ev], horizon_s: float, max_ids: int, watermark: int | None = None) -> list[int]:
    """Positions of the events verify's replay keeps."""
    seen = SeenIds(int(horizon_s * 1000), max_ids)
    kept = []
    for i, e in enumerate(events):
        if seen.is_duplicate(e.event_id):
            continue
        kept.append(i)
        watermark = e.ts if watermark is None else max(watermark, e.ts)
        seen.remember(e.event_id, e.ts, watermark)
    return kept


def bulk(events: list[Ev], cuts: list[int], horizon_s: float, max_ids: int, dedup: Dedup | None = None) -> list[int]:
    """Positions Dedup keeps, fed in batches cut at `cuts` (the watermark kept as the windows keep it)."""
    dedup = dedup or Dedup(horizon_s, max_ids)
    watermark: int | None = None
    kept: list[int] = []
    bounds = [0, *sorted({min(c, len(events)) for c in cuts}), len(events)]
    for a, b in itertools.pairwise(bounds):
        if a >= b:
            continue
        out, positions, dropped = dedup.filter(events[a:b], list(range(a, b)), watermark)
        assert len(out) == len(positions) == (b - a) - dropped
        kept += positions
        for e in out:
            watermark = e.ts if watermark is None else max(watermark, e.ts)
    return kept


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Ev], list[int]]:
    """Event times that mostly advance, sometimes jump back (late) or ahead; ids from a small pool, so
    duplicates are frequent, near and far apart."""
    pool = draw(st.integers(1, 60))
    steps = draw(st.lists(st.tuples(st.integers(0, 4_000), st.sampled_from([0, 0, 0, -30_000, -90_000, -200_000,
                                                                            50_000]), st.integers(0, pool)),
                          min_size=1, max_size=300))  # fmt: skip
    ts, events = BASE, []
    for step, offset, which in steps:
        ts += step
        events.append(Ev(f"e{which}", ts + offset))
    cuts = draw(st.lists(st.integers(0, len(events)), max_size=12))
    return events, cuts


@settings(max_examples=300, deadline=None, database=None)
@given(streams(), st.sampled_from([25, 1_000_000]))
def test_bulk_dedup_keeps_exactly_what_the_one_by_one_rule_keeps_whatever_the_batches(
    stream: tuple[list[Ev], list[int]], max_ids: int
) -> None:
    events, cuts = stream
    want = reference(events, HORIZON_S, max_ids)
    assert bulk(events, cuts, HORIZON_S, max_ids) == want
    assert bulk(events, [], HORIZON_S, max_ids) == want
    assert bulk(events, list(range(len(events))), HORIZON_S, max_ids) == want


@settings(max_examples=200, deadline=None, database=None)
@given(streams(), st.integers(0, 300))
def test_a_restored_snapshot_decides_the_rest_as_an_uninterrupted_run(stream: tuple[list[Ev], list[int]],
                                                                       at: int) -> None:  # fmt: skip
    events, cuts = stream
    at = min(at, len(events))
    first = Dedup(HORIZON_S, 1_000_000)
    kept_before = bulk(events[:at], cuts, HORIZON_S, 1_000_000, first)
    state = pickle.loads(pickle.dumps(first.snapshot()))
    resumed = Dedup.restore(HORIZON_S, 1_000_000, state)
    watermark = max((events[i].ts for i in kept_before), default=None)
    rest, positions, _ = resumed.filter(events[at:], list(range(at, len(events))), watermark)
    assert kept_before + positions == reference(events, HORIZON_S, 1_000_000)
    assert resumed.dropped == len(events) - len(kept_before) - len(rest)


class Fed:
    """A Dedup fed batch after batch, its watermark kept as the windows keep it."""

    def __init__(self, horizon_s: float = HORIZON_S, max_ids: int = 1_000_000) -> None:
        self.dedup = Dedup(horizon_s, max_ids)
        self.watermark: int | None = None

    def __call__(self, events: list[Ev]) -> list[str]:
        out, _, _ = self.dedup.filter(events, list(range(len(events))), self.watermark)
        for e in out:
            self.watermark = e.ts if self.watermark is None else max(self.watermark, e.ts)
        return [e.event_id for e in out]  # type: ignore[attr-defined]


def test_a_duplicate_is_dropped_until_the_watermark_passes_its_time_by_the_horizon() -> None:
    feed = Fed()
    # "a" is in the bucket [BASE, BASE + 6 s), forgotten once the watermark reaches that end + 60 s
    assert feed([Ev("a", BASE), Ev("x", BASE + 60_000), Ev("a", BASE)]) == ["a", "x"]  # 60 s on: a duplicate
    assert feed([Ev("y", BASE + 65_999), Ev("a", BASE)]) == ["y"]  # 1 ms before the end + 60 s: still one
    assert feed([Ev("z", BASE + 66_000), Ev("a", BASE)]) == ["z", "a"]  # then forgotten: counted again
    assert feed.dedup.dropped == 2


def test_a_duplicate_moves_no_watermark_and_is_counted() -> None:
    feed = Fed()
    assert feed([Ev("a", BASE), Ev("a", BASE + 10**9), Ev("b", BASE)]) == ["a", "b"]
    assert feed.dedup.dropped == 1 and feed.watermark == BASE
    assert "b" in feed.dedup.seen  # the far-future duplicate did not push b's bucket out


def test_memory_is_capped_by_forgetting_the_oldest_buckets_first() -> None:
    feed = Fed(max_ids=1_000)
    feed([Ev(f"old{i}", BASE) for i in range(600)] + [Ev(f"new{i}", BASE + 7_000) for i in range(600)])
    assert len(feed.dedup.seen) <= 1_000 and "new5" in feed.dedup.seen and "old5" not in feed.dedup.seen
    assert feed([Ev("old5", BASE), Ev("new5", BASE + 7_000)]) == ["old5"]


def test_a_watermark_marker_forgets_as_events_would() -> None:
    feed = Fed()
    feed([Ev("a", BASE)])
    feed.dedup.advance(BASE + 66_000)
    assert feed([Ev("a", BASE)]) == ["a"]


def test_horizon_zero_switches_it_off() -> None:
    feed = Fed(horizon_s=0)
    assert feed([Ev("a", BASE), Ev("a", BASE)]) == ["a", "a"] and not feed.dedup.seen


def test_ids_behind_the_watermark_are_sealed_as_bytes_and_still_found_until_forgotten() -> None:
    feed = Fed()  # buckets of 6 s; BASE starts one
    feed([Ev(f"a{i:02}", BASE + i) for i in range(100)])
    assert feed([Ev("x", BASE + 20_000)]) == ["x"]  # the watermark three buckets on: the first one is sealed
    dedup, first = feed.dedup, BASE // 6_000
    assert dedup.sealed == {first} and dedup.sealed_ids.nbytes == 300 and set(dedup.sealed_of.tolist()) == {0}
    assert dedup.sealed_base == first
    assert sorted(dedup.sealed_ids.tolist()) == sorted(f"a{i:02}".encode() for i in range(100))
    assert not any(f"a{i:02}" in dedup.seen for i in range(100)) and dedup.remembered == 101
    # a duplicate of a sealed id is found; a late event of the sealed bucket is remembered there as a string
    assert feed([Ev("a05", BASE + 20_001), Ev("late", BASE + 1), Ev("a07", BASE + 20_002)]) == ["late"]
    assert dedup.buckets[first] == ["late"] and feed([Ev("late", BASE + 20_003)]) == []
    resumed = Dedup.restore(HORIZON_S, 1_000_000, pickle.loads(pickle.dumps(dedup.snapshot())))
    assert resumed.remembered == 102 and resumed.sealed == {first}
    feed.dedup = resumed
    assert feed([Ev("a99", BASE + 20_004), Ev("a9", BASE + 20_005)]) == ["a9"]  # a prefix is another id
    feed.dedup.advance(BASE + 66_000)  # the bucket's end + the horizon: forgotten, sealed ids and strings alike
    assert feed.dedup.remembered == 2 and feed.dedup.sealed == {first + 3}  # x and a9 left, sealed by now
    assert feed([Ev("a05", BASE + 66_001), Ev("late", BASE + 66_002)]) == ["a05", "late"]


def test_ids_that_fixed_width_bytes_would_blur_stay_strings_and_are_told_apart() -> None:
    feed = Fed()
    long = "é" * 40  # 80 bytes in UTF-8: past SEAL_MAX_BYTES
    assert feed([Ev("a", BASE), Ev("a\0", BASE + 1), Ev(long, BASE + 2), Ev("b\0\0", BASE + 3)]) == [
        "a", "a\0", long, "b\0\0"]  # fmt: skip
    feed([Ev("x", BASE + 20_000)])
    dedup = feed.dedup
    assert dedup.sealed_ids.tolist() == [b"a"] and sorted(dedup.buckets[BASE // 6_000]) == sorted(
        ["a\0", long, "b\0\0"]
    )
    batch = [Ev("a\0\0", BASE + 20_001), Ev("b", BASE + 20_002), Ev(long, BASE + 20_003), Ev("a", BASE + 20_004),
             Ev("a\0", BASE + 20_005), Ev("b\0\0", BASE + 20_006), Ev(long[:-1], BASE + 20_007)]  # fmt: skip
    assert feed(batch) == ["a\0\0", "b", long[:-1]]


def test_the_cap_forgets_sealed_buckets_oldest_first() -> None:
    feed = Fed(max_ids=1_000)
    feed([Ev(f"old{i}", BASE) for i in range(600)])
    feed([Ev(f"mid{i}", BASE + 12_000) for i in range(300)])  # old's bucket sealed
    assert len(feed.dedup.sealed_ids) == 600
    feed([Ev(f"new{i}", BASE + 24_000) for i in range(300)])  # 1,200 ids: the oldest bucket goes
    assert feed.dedup.remembered == 600 and len(feed.dedup.sealed_ids) == 300  # mid sealed by now, old forgotten
    assert feed([Ev("old5", BASE + 24_001), Ev("mid5", BASE + 24_002), Ev("new5", BASE + 24_003)]) == ["old5"]


def test_a_hash_found_is_confirmed_on_the_bytes_even_past_a_full_directory_slot() -> None:
    """hash() collisions cannot be made on purpose (its key is per process): planted ones instead. Forty ids
    share one key, the one of x39, so its slot holds more than the window of keys compared at once."""
    dedup = Dedup(HORIZON_S, 1_000_000)
    names = [f"x{i}" for i in range(40)]
    keys = np.array([hash("x39")] * 40 + [hash(f"y{i}") for i in range(1_000)], dtype=np.int64).view(np.uint64)
    ids = np.array([n.encode() for n in names] + [f"y{i}".encode() for i in range(1_000)])
    dedup._add_sealed(keys, ids, np.full(len(ids), 7, dtype=np.int64))
    dedup.sealed = {7}
    assert dedup._in_sealed(["x39", "y5", "x0", "y1000", "x39\0"]) == {"x39": 7, "y5": 7}  # x0: not under its hash
