"""Windows through the dataflow on fixed clocks: tumbling and sliding windows, lateness, caps, tiers."""

from __future__ import annotations

import gc
import pickle
from collections import defaultdict

import datasketches as ds
import orjson
import pytest
from pydantic import ValidationError

from livedash.dataflow.logic import PartitionLogic
from livedash.kafka.messages import Out
from livedash.pipeline.contract import Validator
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windows import Pane, PartitionWindows
from tests.dataflow_runs import (
    BASE,
    LATENESS_S,
    InputClock,
    event,
    final_state,
    finals,
    records,
    rows,
    run,
    settings,
    strip_sketches,
)
from tests.dataflow_scaffold import batch_of


def test_tumbling_window_is_provisional_then_final() -> None:
    cfg = settings()
    recs = records([(BASE + i * 1000, event(BASE + i * 1000, latency=float(i))) for i in range(10)])
    recs += records([(BASE + 16_000, event(BASE + 16_000))], first_offset=10)  # watermark 16 s: closes [0, 10)
    out = run(cfg, recs)
    window = [r for r in rows(out) if r["rollup_name"] == "tumbling_10s" or r["rollup_name"] == "tumble_10s"]
    first = [r for r in window if r["window_start"] == BASE]
    provisional = [r for r in first if not r["is_final"]]
    final = [r for r in first if r["is_final"]]
    assert provisional, "an open window publishes its running value"
    assert [r["event_count"] for r in provisional] == sorted(r["event_count"] for r in provisional)
    assert all(r["version"] == 2 * (r["event_count"] - 1) for r in provisional)  # offsets 0..n-1 folded in
    assert len(final) == 1
    assert final[0]["event_count"] == 10
    assert final[0]["latency_ms_sum"] == sum(range(10))
    assert (final[0]["latency_ms_min"], final[0]["latency_ms_max"]) == (0.0, 9.0)
    assert final[0]["version"] == 2 * 9 + 1  # beats every provisional version of the same key
    assert final[0]["window_end"] == BASE + 10_000


def test_lateness_boundary_is_exact() -> None:
    """Window [0, 10 s) is final once the watermark reaches 10 s + lateness, not one millisecond earlier."""
    cfg = settings()
    end = BASE + 10_000
    recs = records(
        [
            (BASE, event(BASE, user="a")),
            (end + LATENESS_S * 1000 - 1, event(end + LATENESS_S * 1000 - 1, user="b")),  # watermark 1 ms short
            (end + LATENESS_S * 1000, event(BASE + 5_000, user="c")),  # on time: window still open
            (end + LATENESS_S * 1000, event(end + LATENESS_S * 1000, user="d")),  # watermark reaches the boundary
            (end + LATENESS_S * 1000, event(BASE + 6_000, user="e")),  # late now
        ]
    )
    out = run(cfg, recs)
    final = finals(out, "tumble_10s")[(BASE, "click", "DE", 0)]
    assert final["event_count"] == 2  # a and c
    late = [o for o in out if o.role == "late"]
    assert len(late) == 1
    assert orjson.loads(late[0].value)["user_id"] == "e"
    assert dict(late[0].headers)["livedash.source.offset"] == b"4"
    corrections = [r for r in rows(out) if r["kind"] == "late" and r["rollup_name"] == "tumble_10s"]
    assert [(c["window_start"], c["event_count"], c["is_final"]) for c in corrections] == [(BASE, 1, 1)]


def test_late_events_are_still_counted_exactly() -> None:
    cfg = settings()
    values = [(BASE + i * 100, event(BASE + i * 100, user=f"u{i % 7}")) for i in range(50)]
    values += [(BASE + 60_000, event(BASE + 60_000))]  # closes everything before 55 s
    values += [(BASE + 60_000, event(BASE + i * 100, user="late")) for i in range(20)]  # all late
    out = run(cfg, records(values))
    kept = final_state(out).values()  # what Pinot's upsert keeps
    total = sum(row["event_count"] for _, row in kept if row["rollup_name"] == "tumble_10s")
    assert total == 71  # 50 on time + 1 (still open) + 20 late corrections: nothing dropped, nothing twice
    assert sum(1 for o in out if o.role == "late") == 20


def test_late_corrections_are_one_row_per_window_group_and_block_of_the_watermark() -> None:
    """25 late events of one group, five at each of five watermarks 10 s apart, blocks of 10 s: per closed
    window one correction row per block (5), not one per late event (25); in the sliding roll-up each belongs to
    3 closed windows, so 15 rows instead of 75. Together they hold every late event once per window."""
    cfg = settings(late_block_s=10)
    values = [(BASE + i * 100, event(BASE + i * 100, user=f"u{i}")) for i in range(10)]
    values += [(BASE + 60_000, event(BASE + 60_000))]  # watermark 60 s: closes every window before 55 s
    for i in range(25):
        if i and i % 5 == 0:  # on time, moves the watermark on by 10 s: the next block
            values.append((BASE + 60_000 + i * 2_000, event(BASE + 60_000 + i * 2_000, user="w")))
        values.append((BASE + 60_000 + i * 2_000, event(BASE + 1_000 + i, user=f"late{i % 4}")))
    out = run(cfg, records(values), batch_size=4)
    assert sum(1 for o in out if o.role == "late") == 25
    kept = [row for _, row in final_state(out).values() if row["kind"] == "late"]
    tumble = [r for r in kept if r["rollup_name"] == "tumble_10s"]
    assert sorted(r["event_count"] for r in tumble) == [5] * 5 and {r["window_start"] for r in tumble} == {BASE}
    slide = [r for r in kept if r["rollup_name"] == "slide_30s"]
    assert len(slide) == 15 and {r["window_start"] for r in slide} == {BASE - 20_000, BASE - 10_000, BASE}
    assert sum(r["event_count"] for r in slide) == 3 * 25
    theta = ds.compact_theta_sketch.deserialize(bytes.fromhex(tumble[0]["distinct_theta"]))
    assert theta.get_estimate() == 4  # five events of the users late0..late3


def test_a_block_of_corrections_continues_exactly_after_a_snapshot_in_its_middle() -> None:
    """Snapshot (pickled) half-way through a block's late events, restored into a new PartitionWindows: the
    rows Pinot keeps are those of the uninterrupted run, the restored block re-published at the same versions."""
    cfg = settings(late_block_s=100)
    validator = Validator(cfg.events)
    payloads = [event(BASE + i * 100, user=f"u{i}") for i in range(10)] + [event(BASE + 60_000)]
    payloads += [event(BASE + 1_000 + i * 7, user=f"late{i % 5}", latency=float(i)) for i in range(30)]
    parsed = [validator.parse(p, BASE) for p in payloads]

    def feed(w: PartitionWindows, lo: int, hi: int) -> list[bytes]:
        out = []
        for offset in range(lo, hi):
            w.add(parsed[offset], offset)  # type: ignore[arg-type]
            if offset % 3 == 0:
                out += [r.value for r in w.publish()]
        return out + [r.value for r in w.publish()]

    def kept(values: list[bytes]) -> dict[str, dict[str, object]]:
        best: dict[str, dict[str, object]] = {}
        for v in values:
            row = orjson.loads(v)
            if row["kind"] == "late" and (row["pk"] not in best or row["version"] > best[row["pk"]]["version"]):
                best[row["pk"]] = row
        return {pk: strip_sketches(row) for pk, row in best.items()}

    whole = PartitionWindows(cfg, 0)
    expected = kept(feed(whole, 0, len(parsed)))
    first = PartitionWindows(cfg, 0)
    got = feed(first, 0, 25)
    restored = PartitionWindows.restore(cfg, 0, pickle.loads(pickle.dumps(first.snapshot())))
    got += [r.value for r in restored.publish()] + feed(restored, 25, len(parsed))
    assert kept(got) == expected
    assert sum(row["event_count"] for row in expected.values() if row["rollup_name"] == "tumble_10s") == 30


def test_sliding_windows_are_unions_of_panes() -> None:
    cfg = settings()
    values = [(BASE + s * 1000, event(BASE + s * 1000, latency=float(s))) for s in range(0, 40, 5)]  # 0,5..35 s
    values += [(BASE + 100_000, event(BASE + 100_000))]
    out = run(cfg, records(values))
    slides = {r["window_start"]: r for r in rows(out) if r["rollup_name"] == "slide_30s" and r["is_final"]}
    # window [0, 30 s) holds 0,5,...,25 s; [10 s, 40 s) holds 10..35 s; [-20 s, 10 s) holds 0 and 5 s
    assert slides[BASE]["event_count"] == 6
    assert slides[BASE + 10_000]["event_count"] == 6
    assert slides[BASE - 20_000]["event_count"] == 2
    assert slides[BASE]["latency_ms_max"] == 25.0
    assert slides[BASE + 10_000]["latency_ms_min"] == 10.0


def test_caps_fold_extra_values_into_other() -> None:
    cfg = settings()  # country cap 3
    values = [(BASE + i, event(BASE + i, country=c)) for i, c in enumerate(["DE", "FR", "US", "JP", "BR", "DE"])]
    values += [(BASE + 20_000, event(BASE + 20_000))]
    out = run(cfg, records(values))
    by_country = {k[2]: v["event_count"] for k, v in finals(out, "tumble_10s").items() if k[0] == BASE}
    assert by_country == {"DE": 2, "FR": 1, "US": 1, "__other__": 2}


def test_caps_keep_the_top_values_of_earlier_panes() -> None:
    """Caps rank values by their events in the partition's earlier panes: a value that was frequent keeps its
    own row in the next window even when it arrives after the cap is filled by rarer newcomers."""
    cfg = settings()  # country cap 3
    first = ["JP"] * 5 + ["BR"] * 4 + ["DE", "FR", "US"]  # JP, BR, then one each: top 3 = JP, BR, then DE
    second = ["DE", "FR", "US", "IN", "JP", "BR", "JP"]  # newcomers first; JP and BR must still get own rows
    values = [(BASE + i, event(BASE + i, country=c)) for i, c in enumerate(first)]
    values += [(BASE + 10_000 + i, event(BASE + 10_000 + i, country=c)) for i, c in enumerate(second)]
    values += [(BASE + 40_000, event(BASE + 40_000))]
    out = run(cfg, records(values))
    pane = lambda start: {k[2]: v["event_count"] for k, v in finals(out, "tumble_10s").items() if k[0] == start}  # noqa: E731
    assert pane(BASE) == {"JP": 5, "BR": 4, "DE": 1, "__other__": 2}  # no history yet: first come
    assert pane(BASE + 10_000) == {"JP": 2, "BR": 1, "DE": 1, "__other__": 3}  # top 3 of the panes before


def test_popularity_is_bounded_and_forgets() -> None:
    cfg = settings()
    values = []
    for p in range(12):  # 12 panes, each with its own 5 countries: old ones decay and are dropped
        values += [(BASE + p * 10_000 + i, event(BASE + p * 10_000 + i, country=f"c{p}-{i}")) for i in range(5)]
    windows = PartitionWindows(cfg, 0)
    validator = Validator(cfg.events)
    events = [validator.parse(v, at) for at, v in values]
    windows.add_batch(events, list(range(len(events))))  # type: ignore[arg-type]
    tumble = windows.rollups[0]
    countries = tumble.popular[1]
    assert len(countries) <= 4 * 3  # POPULARITY_KEEP times the cap
    assert not any(name.startswith("c0-") for name in countries)
    assert all(tumble.popular[0]["click"] >= score for score in countries.values())


def test_sliding_windows_are_published_once_current_not_minutes_ahead() -> None:
    cfg = settings()  # slide_30s: 30 s windows every 10 s
    validator = Validator(cfg.events)
    windows = PartitionWindows(cfg, 0)

    def add(offset: int, at: int) -> None:
        windows.add(validator.parse(event(at), at), offset)  # type: ignore[arg-type]

    def published(flush: bool = False) -> dict[int, int]:
        rows = [orjson.loads(r.value) for r in windows.publish(flush)]
        return {r["window_start"]: r["event_count"] for r in rows if r["rollup_name"] == "slide_30s"}

    for i in range(5):
        add(i, BASE + 1000 + i)  # pane [BASE, BASE+10s): in the windows starting BASE-20s, BASE-10s and BASE
    # watermark BASE+1s: only the window ending within one slide (BASE-20s .. BASE+10s) is current
    assert published() == {BASE - 20_000: 5}
    add(5, BASE + 12_000)  # the watermark moves into the next pane: the window ending at BASE+20s is current
    assert published() == {BASE - 10_000: 6}  # both panes; the window starting at BASE still waits
    rows = published(flush=True)  # the end of the input: everything still waiting goes out
    assert rows == {BASE: 6, BASE + 10_000: 1}


def test_tiers_route_rows_and_expired_windows_are_not_published() -> None:
    """Running rows of open windows go to the live table only; final rows go to their tier's table, and to the
    live one too while it keeps the window (where they supersede the running rows); a window older than a table
    keeps is not published to it (Pinot would only keep its upsert keys in memory until retention deleted
    them). A final-only roll-up has no running rows and nothing in the live table."""
    cfg = PipelineSettings.model_validate(
        {
            **settings().model_dump(exclude={"rollups", "retention"}),
            "retention": {"recent_h": 1, "history_h": 24, "live_min": 40},
            "rollups": [
                {"name": "fine", "dimensions": ["type"], "window": {"size_s": 10}},
                {"name": "coarse", "dimensions": ["type"], "window": {"size_s": 300}, "tier": "history"},
                {"name": "late_too", "dimensions": ["type"], "window": {"size_s": 300}, "tier": "history",
                 "live_from": "fine"},
            ],
        }
    )  # fmt: skip
    assert cfg.copies_to_live(cfg.rollup("coarse")) and not cfg.has_running_rows(cfg.rollup("late_too"))
    clock = InputClock()
    logic = PartitionLogic(cfg, clock, None)
    hours_2, min_50, min_20 = BASE - 7_200_000, BASE - 3_000_000, BASE - 1_200_000
    events = [(BASE, event(t)) for t in (hours_2, min_50, min_20, BASE)]
    out = logic.on_batch([batch_of(records(events))])[0]
    out += logic.on_eof()[0]
    published = [(o.role, orjson.loads(o.value)["rollup_name"], orjson.loads(o.value)["window_start"],
                  orjson.loads(o.value)["is_final"]) for o in out if isinstance(o, Out)]  # fmt: skip
    assert len(published) == len(set(published))
    fine = {(role, ws, final) for role, name, ws, final in published if name == "fine"}
    # beyond the recent tier's hour: nowhere; beyond the live table's 40 minutes: the tier's table only
    assert fine == {("live", BASE, 0), ("aggregates", min_50, 1), ("aggregates", min_20, 1), ("live", min_20, 1)}
    coarse = {(role, ws, final) for role, name, ws, final in published if name == "coarse"}
    assert coarse == {
        ("live", BASE, 0),
        ("history", hours_2, 1),
        ("history", min_50 - min_50 % 300_000, 1),
        ("history", min_20, 1),
        ("live", min_20, 1),
    }, coarse
    late_too = {(role, ws, final) for role, name, ws, final in published if name == "late_too"}
    assert late_too == {("history", hours_2, 1), ("history", min_50 - min_50 % 300_000, 1), ("history", min_20, 1)}


def test_the_live_table_must_keep_an_open_window_until_it_is_final_and_a_while_longer() -> None:
    """A roll-up published while open needs the live table to keep twice its window plus the allowed lateness:
    the dashboard reads its windows there until final in its tier."""
    base = settings().model_dump(exclude={"rollups", "retention"})
    coarse = {"name": "coarse", "dimensions": ["type"], "window": {"size_s": 300}, "tier": "history"}
    with pytest.raises(ValidationError, match="keeps its open windows in the live table, which keeps 10 min"):
        PipelineSettings.model_validate({**base, "retention": {"live_min": 10}, "rollups": [coarse]})
    PipelineSettings.model_validate({**base, "retention": {"live_min": 11}, "rollups": [coarse]})  # 2 x 305 s
    # final only: no running rows, so no need
    fine = {"name": "fine", "dimensions": ["type"], "window": {"size_s": 10}}
    PipelineSettings.model_validate({**base, "retention": {"live_min": 1}, "rollups": [fine, {**coarse,
                                     "live_from": "fine"}]})  # fmt: skip


def test_the_history_tier_republishes_its_open_windows_less_often() -> None:
    """Open windows of the recent tier go out every publish_every_s; those of the history tier (coarse windows
    for long ranges, whose growing sketches were half of the output bytes) every history_publish_every_s, with
    the changes of the seconds between; their final rows are not held back."""
    cfg = PipelineSettings.model_validate(
        {
            **settings(history_publish_every_s=5).model_dump(exclude={"rollups"}),
            "rollups": [
                {"name": "fine", "dimensions": ["type"], "window": {"size_s": 10}},
                {"name": "coarse", "dimensions": ["type", "country"], "window": {"size_s": 30}, "tier": "history"},
            ],
        }
    )
    clock = InputClock()
    logic = PartitionLogic(cfg, clock, None)
    running: dict[str, list[int]] = defaultdict(list)  # roll-up -> seconds at which it published running rows
    coarse_countries: set[str] = set()
    for i, rec in enumerate(records([(BASE + i * 1000, event(BASE + i * 1000, country=f"C{i % 3}"))
                                     for i in range(12)])):  # fmt: skip
        clock.see(rec)
        for row in (orjson.loads(o.value) for o in logic.on_batch([batch_of([rec])])[0] if isinstance(o, Out)):
            if not row["is_final"]:
                running[row["rollup_name"]].append(i)
                if row["rollup_name"] == "coarse":
                    coarse_countries.add(row["country"])
    assert running["fine"] == list(range(12))  # every second
    assert sorted(set(running["coarse"])) == [0, 5, 10]  # every 5 s
    assert coarse_countries == {"C0", "C1", "C2"}  # the groups changed between publications went out too
    out = logic.on_eof()[0]
    final = [orjson.loads(o.value) for o in out if isinstance(o, Out) and orjson.loads(o.value)["is_final"]]
    assert not final  # nothing is final before the watermark passes end + lateness
    late = records([(BASE + 40_000, event(BASE + 40_000))], first_offset=12)[0]
    clock.see(late)
    out = logic.on_batch([batch_of([late])])[0]
    rows_out = map(orjson.loads, (o.value for o in out if isinstance(o, Out)))
    assert {(r["rollup_name"], r["window_start"]) for r in rows_out if r["is_final"]} >= {
        ("fine", BASE),
        ("coarse", BASE),
    }


@pytest.mark.parametrize("partials", [False, True], ids=["rows", "partials for the merge"])
def test_closed_panes_are_freed_without_the_cycle_collector(partials: bool) -> None:
    """A pane's groups point back at it; once its windows close it must go by reference count alone: the
    dataflow's collector thresholds make full collections rare, and a cycle kept every retired pane (GBs an
    hour at 2,000 events/s)."""
    cfg = settings()
    windows = PartitionWindows(cfg, 0, partials=partials)
    validator = Validator(cfg.events)
    gc.collect()
    gc.disable()
    try:
        for p in range(40):  # 40 panes of 10 s, watermark moving past their lateness
            values = [(BASE + p * 10_000 + i, event(BASE + p * 10_000 + i, country=f"c{i % 4}")) for i in range(5)]
            events = [validator.parse(v, at) for at, v in values]
            windows.add_batch(events, list(range(p * 5, p * 5 + 5)))  # type: ignore[arg-type]
            if partials:  # as PartitionLogic drives phase one
                windows.partials()
                windows.late_rows()
            else:
                windows.publish()
        kept = sum(len(rw.panes) for rw in windows.rollups)
        alive = sum(isinstance(o, Pane) for o in gc.get_objects())
    finally:
        gc.enable()
    assert kept < 40 * 2  # panes did close (lateness 30 s: a few dozen seconds of panes stay)
    assert alive == kept
