"""The aggregation dataflow on fixed clocks: TestingSource in, TestingSink out, no servers.

The clock is driven by the input: each record's Kafka timestamp sets "now", so publishing cadence, idle
detection and 'too old' checks are deterministic.
"""

from __future__ import annotations

import gc
import inspect
import pickle
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import AbortExecution, TestingSink, TestingSource, cluster_main, run_main
from prometheus_client import REGISTRY

from livedash.dataflow.flow import build_windowed_flow, tune_gc
from livedash.dataflow.logic import PartitionLogic
from livedash.dataflow.source import WindowedSource
from livedash.kafka.messages import Out, ValidEvents
from livedash.kafka.source import KafkaBatchSource, RecordBatch
from livedash.pipeline.contract import Validator
from livedash.pipeline.marker import MARKER_KEY, parse_marker
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windows import PartitionWindows
from tests.dataflow_scaffold import Record, batch_of, build_flow

BASE = 1_800_000_000_000  # a multiple of 10 s, 60 s and 300 s (window boundaries)
LATENESS_S = 5


def settings(**windows: Any) -> PipelineSettings:
    return PipelineSettings.model_validate(
        {
            "events": {
                "types": ["click", "view"],
                "dimensions": {"type": 4, "country": 3},
                "metrics": {"latency_ms": {"min": 0, "max": 10_000}},
            },
            "windows": {"allowed_lateness_s": LATENESS_S, "publish_every_s": 1, "idle_timeout_s": 10, **windows},
            "rollups": [
                {"name": "tumble_10s", "dimensions": ["type", "country"], "window": {"size_s": 10}},
                {"name": "slide_30s", "dimensions": ["type"], "window": {"size_s": 30, "every_s": 10}},
            ],
        }
    )


class InputClock:
    """now() = the Kafka timestamp of the latest record seen by the flow."""

    def __init__(self) -> None:
        self.now = datetime.fromtimestamp(BASE / 1000, UTC)

    def see(self, rec: Record) -> Record:
        self.now = max(self.now, datetime.fromtimestamp(rec.timestamp_ms / 1000, UTC))
        return rec

    def __call__(self) -> datetime:
        return self.now


def event(ts: int, kind: str = "click", country: str = "DE", user: str = "u1", latency: float | None = 10.0) -> bytes:
    obj: dict[str, Any] = {"event_id": f"e{ts}-{user}", "ts": ts, "type": kind, "user_id": user, "country": country}
    if latency is not None:
        obj["latency_ms"] = latency
    return orjson.dumps(obj)


def records(values: list[tuple[int, bytes]], partition: int = 0, first_offset: int = 0) -> list[Record]:
    """(arrival time ms, payload) -> Records with consecutive offsets."""
    return [Record(partition, first_offset + i, at, None, value) for i, (at, value) in enumerate(values)]


def run(cfg: PipelineSettings, recs: list[Record], workers: int = 1, batch_size: int = 1) -> list[Out]:
    clock = InputClock()
    out: list[Out] = []
    flow = build_flow(cfg, TestingSource(recs, batch_size=batch_size), TestingSink(out), clock=clock,
                      convert=lambda rec: batch_of([clock.see(rec)]))  # fmt: skip
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


def valid_events(out: list[Any]) -> dict[int, list[tuple[bytes | None, bytes]]]:
    """Partition -> (key, value) of the valid events published, in order."""
    found: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for o in out:
        if isinstance(o, ValidEvents):
            found[o.partition] += zip(o.keys, o.values, strict=True)
    return dict(found)


def rows(out: list[Out]) -> list[dict[str, Any]]:
    return [orjson.loads(o.value) for o in out if o.role == "aggregates"]


def finals(out: list[Out], rollup: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = {}
    for row in rows(out):
        if row["rollup_name"] == rollup and row["is_final"] and row["kind"] == "window":
            result[(row["window_start"], row["type"], row["country"], row["source_partition"])] = row
    return result


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


def test_dead_letters_carry_reason_partition_and_offset() -> None:
    cfg = settings()
    values = [
        (BASE, event(BASE)),
        (BASE, b"{not json"),
        (BASE, orjson.dumps({"event_id": "x", "ts": BASE, "type": "click"})),  # no user_id
        (BASE, b""),
        (BASE, event(BASE, kind="purchase")),  # unknown type
        (BASE + 20_000, event(BASE + 20_000)),
    ]
    out = run(cfg, records(values, partition=3))
    dead = [o for o in out if o.role == "dead_letter"]
    assert [dict(o.headers)["livedash.source.offset"] for o in dead] == [b"1", b"2", b"3", b"4"]
    assert all(dict(o.headers)["livedash.source.partition"] == b"3" for o in dead)
    reasons = [dict(o.headers)["livedash.reason"].decode() for o in dead]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1:] == [
        "invalid event: Object missing required field `user_id`",
        "empty message",
        "invalid event: Invalid enum value 'purchase' - at `$.type`",
    ]
    assert dead[0].value == b"{not json"  # original bytes
    assert sum(r["event_count"] for r in finals(out, "tumble_10s").values()) == 1


def read_back(out: list[Out], clock: InputClock, offset: int) -> list[RecordBatch]:
    """The watermark markers among out, as the source would deliver them once written to their partition."""
    markers = [o for o in out if o.role == "marker"]
    ms = int(clock.now.timestamp() * 1000)
    return [batch_of([Record(m.partition, offset + i, ms, m.key, m.value)]) for i, m in enumerate(markers)]  # type: ignore[arg-type]


def test_idle_partition_does_not_stall_the_other_and_closes_on_its_own() -> None:
    cfg = settings()
    clock = InputClock()
    quiet = PartitionLogic(cfg, clock, None)
    quiet.on_batch([batch_of(records([(BASE, event(BASE))], partition=1))])
    assert quiet.notify_at() is not None  # it has an open window, so it asks to be woken
    first = quiet.on_notify()[0]
    assert not finals(first, "tumble_10s") and not read_back(first, clock, 1)  # not idle yet: nothing closes
    busy = PartitionLogic(cfg, clock, None)
    busy_out: list[Out] = []
    for i in range(40):  # partition 0 moves on for 40 s; partition 1 stays silent
        rec = records([(BASE + i * 1000, event(BASE + i * 1000))], partition=0, first_offset=i)[0]
        clock.see(rec)
        busy_out += busy.on_batch([batch_of([rec])])[0]
    assert finals(busy_out, "tumble_10s"), "partition 0 finalises its windows without waiting for partition 1"
    assert not read_back(busy_out, clock, 0), "a busy partition proposes no markers"
    # 39 s without input, past the 10 s idle timeout: partition 1's event time should follow the clock. The
    # logic proposes the advance as a marker for partition 1 and closes nothing until it reads it back.
    proposed = quiet.on_notify()[0]
    assert not finals(proposed, "tumble_10s")
    markers = read_back(proposed, clock, 1)
    assert len(markers) == 1 and markers[0].partition == 1
    assert parse_marker(markers[0].values[0]) == BASE + 39_000 - 10_000  # the clock from the last event on
    # Repeated wake-ups while the marker is on its way propose nothing more (no flood, no run-away).
    for _ in range(5):
        assert not read_back(quiet.on_notify()[0], clock, 2)
    quiet_out = quiet.on_batch(markers)[0] + quiet.on_notify()[0]  # final rows go out at the next publish
    assert finals(quiet_out, "tumble_10s")[(BASE, "click", "DE", 1)]["event_count"] == 1
    assert quiet.windows is not None and quiet.windows.watermark == BASE + 39_000 - 10_000
    assert quiet.windows.events_in == 1  # a marker is not an event
    assert quiet.notify_at() is not None  # its 30 s sliding windows are still open
    clock.now += timedelta(seconds=30)
    again = quiet.on_notify()[0]
    assert not finals(again, "slide_30s")
    closed = quiet.on_batch(read_back(again, clock, 2))[0] + quiet.on_notify()[0]
    assert finals(closed, "slide_30s")  # they close too
    assert quiet.notify_at() is None  # nothing open any more: no wake-ups, no markers, no CPU


def test_a_replay_across_an_idle_advance_gives_the_same_rows() -> None:
    """The crash a clock-driven advance could not survive: the first run closes a quiet partition's window and
    then sees an event for it (late: a correction row); the replay from an earlier snapshot comes up at a
    different time. Because the advance is a marker in the partition, both runs fold the event the same way."""
    cfg = settings()
    clock = InputClock()
    logic = PartitionLogic(cfg, clock, None)
    logic.on_batch([batch_of(records([(BASE, event(BASE))]))])
    snapshot = logic.snapshot()
    clock.now += timedelta(seconds=30)
    markers = read_back(logic.on_notify()[0], clock, 1)
    assert markers
    late = records([(BASE + 31_000, event(BASE + 2_000, user="u2"))], first_offset=2)
    first = logic.on_batch(markers)[0] + logic.on_batch([batch_of(late)])[0] + logic.on_eof()[0]
    assert [o.role for o in first].count("late") == 1
    # The replay: restored from the snapshot right after the first event, woken at once (not quiet yet).
    replay_clock = InputClock()
    replay_clock.now = clock.now
    replayed = PartitionLogic(cfg, replay_clock, pickle.loads(pickle.dumps(snapshot)))
    assert not read_back(replayed.on_notify()[0], replay_clock, 1)  # a fresh start proposes nothing yet
    second = replayed.on_batch(markers)[0] + replayed.on_batch([batch_of(late)])[0] + replayed.on_eof()[0]
    assert [o.role for o in second].count("late") == 1
    exact = {pk: (v, strip_sketches(row)) for pk, (v, row) in final_state(first).items()}
    assert exact == {pk: (v, strip_sketches(row)) for pk, (v, row) in final_state(second).items()}


def test_a_snapshot_does_not_change_after_it_was_taken() -> None:
    """Bytewax pickles a snapshot after snapshot() returns, while the logic may go on: the snapshot must not
    share mutable state with the live windows (sums, caps, popularity), or a resume would count twice."""
    logic = PartitionLogic(settings(), InputClock(), None)
    logic.on_batch([batch_of(records([(BASE + i, event(BASE + i, country=c)) for i, c in enumerate("ABCD")]))])
    snap = logic.snapshot()
    frozen = pickle.dumps(snap)
    logic.on_batch([batch_of(records([(BASE + 9, event(BASE + 9, country=c)) for c in "ABCE"], first_offset=4))])
    assert pickle.dumps(snap) == frozen


def test_a_malformed_marker_is_dead_lettered() -> None:
    cfg = settings()
    logic = PartitionLogic(cfg, InputClock(), None)
    bad = Record(0, 0, BASE, MARKER_KEY, b'{"type": "__livedash_watermark__", "watermark_ms": "soon"}')
    out = logic.on_batch([batch_of([bad, *records([(BASE, event(BASE))], first_offset=1)])])[0]
    assert [o.role for o in out if o.role != "aggregates"] == ["dead_letter", "valid"]
    assert logic.windows is not None and logic.windows.events_in == 1


def workload() -> list[Record]:
    out = []
    for p in range(4):
        values = []
        for i in range(300):
            ts = BASE + i * 250 + (p * 37 % 5) * 100
            late = i % 50 == 49
            values.append((ts, event(ts - (20_000 if late else 0), kind="click" if i % 3 else "view",
                                     country=["DE", "FR", "US", "JP"][i % 4], user=f"u{i % 23}",
                                     latency=float(i % 17))))  # fmt: skip
        values.append((BASE + 200_000, event(BASE + 200_000)))
        out += records(values, partition=p)
    return out


def with_invalid(recs: list[Record]) -> list[Record]:
    """Every 97th message replaced by an invalid one, among valid ones."""
    for i in range(0, len(recs), 97):
        recs[i] = Record(recs[i].partition, recs[i].offset, recs[i].timestamp_ms, None, b'{"ts": "soon"')
    return recs


SKETCHES = ("distinct_theta", "quantile_kll", "quantile_tdigest")


def strip_sketches(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in SKETCHES}


def final_state(out: list[Out]) -> dict[str, tuple[int, dict[str, Any]]]:
    """What Pinot would keep: per key the row with the highest version (ties must be identical)."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for row in rows(out):
        prev = best.get(row["pk"])
        if prev is not None and prev[0] == row["version"]:
            # Exact columns must match; sketch bytes may differ (KLL compaction is randomised), within error.
            assert strip_sketches(prev[1]) == strip_sketches(row), "same key and version must mean the same row"
        if prev is None or row["version"] > prev[0]:
            best[row["pk"]] = (row["version"], row)
    return best


def test_one_worker_and_two_workers_give_identical_results() -> None:
    cfg = settings()
    one = final_state(run(cfg, workload(), workers=1, batch_size=7))
    two = final_state(run(cfg, workload(), workers=2, batch_size=7))
    assert one.keys() == two.keys()
    for pk in one:
        a, b = one[pk][1], two[pk][1]
        assert strip_sketches(a) == strip_sketches(b)


def test_totals_match_the_input_across_partitions() -> None:
    cfg = settings()
    recs = workload()
    state = final_state(run(cfg, recs, batch_size=13))
    totals: Counter[str] = Counter()
    for _, row in state.values():  # final, provisional (the last window is still open) and corrections
        totals[row["rollup_name"]] += row["event_count"]
    assert totals["tumble_10s"] == len(recs)
    assert totals["slide_30s"] == 3 * len(recs)  # every event is in 3 sliding windows


@pytest.mark.parametrize("cut", [1, 150, 600, 1000])
def test_snapshot_and_restore_continue_exactly(cut: int) -> None:
    cfg = settings()
    recs = workload()
    clock = InputClock()
    by_partition: dict[int, list[Record]] = defaultdict(list)
    for rec in recs:
        by_partition[rec.partition].append(rec)

    def drive(split: bool) -> list[Out]:
        out: list[Out] = []
        seen = 0
        for part_recs in by_partition.values():
            logic = PartitionLogic(cfg, clock, None)
            for rec in part_recs:
                clock.see(rec)
                out += logic.on_batch([batch_of([rec])])[0]
                seen += 1
                if split and seen == cut:
                    import pickle

                    logic = PartitionLogic(cfg, clock, pickle.loads(pickle.dumps(logic.snapshot())))
            out += logic.on_eof()[0]
        return out

    whole, resumed = final_state(drive(False)), final_state(drive(True))
    assert whole.keys() == resumed.keys()
    for pk, (version, row) in whole.items():
        assert resumed[pk][0] == version
        assert strip_sketches(resumed[pk][1]) == strip_sketches(row)


@pytest.mark.parametrize("size", [7, 64, 10_000])
def test_batches_of_any_size_give_what_one_record_at_a_time_gives(size: int) -> None:
    """The Kafka source delivers whole batches; folding them at once must not change any result: which events
    are late (the watermark each one meets), dead letters, corrections and every final row."""
    cfg = settings()
    recs = with_invalid(workload())
    clock = InputClock()

    def drive(chunk: int) -> list[Out]:
        out: list[Out] = []
        for p in range(4):
            part = [r for r in recs if r.partition == p]
            logic = PartitionLogic(cfg, clock, None)
            for start in range(0, len(part), chunk):
                batch = part[start : start + chunk]
                for rec in batch:
                    clock.see(rec)
                out += logic.on_batch([batch_of(batch)])[0]
            out += logic.on_eof()[0]
        return out

    def side(out: list[Out]) -> list[tuple[str, bytes, bytes]]:
        return sorted((o.role, dict(o.headers)["livedash.source.offset"], o.value) for o in out
                      if isinstance(o, Out) and o.headers)  # fmt: skip

    single, batched = drive(1), drive(size)
    assert side(batched) == side(single)
    assert sum(1 for o in single if o.role == "late") >= 20 and sum(1 for o in single if o.role == "dead_letter") >= 12
    one, many = final_state(single), final_state(batched)
    assert any(version % 2 == 1 for version, _ in one.values())  # final rows are among them
    assert one.keys() == many.keys()
    for pk, (version, row) in one.items():
        assert many[pk][0] == version
        assert strip_sketches(many[pk][1]) == strip_sketches(row)


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


def test_a_quiet_partition_publishes_its_sliding_windows_ahead_of_the_watermark() -> None:
    cfg = settings()
    clock = InputClock()
    logic = PartitionLogic(cfg, clock, None)
    rec = records([(BASE + 1000, event(BASE + 1000))])[0]
    clock.see(rec)
    first = {r["window_start"] for r in rows(logic.on_batch([batch_of([rec])])[0]) if r["rollup_name"] == "slide_30s"}
    assert first == {BASE - 20_000}  # only the current window while input flows
    clock.now += timedelta(seconds=11)  # past the 10 s idle timeout
    later = {r["window_start"] for r in rows(logic.on_notify()[0]) if r["rollup_name"] == "slide_30s"}
    assert {BASE - 10_000, BASE} <= later  # the windows ending ahead show their running value too


@pytest.mark.parametrize("n", [60, 101, 150, 199, 375, 5_000])
def test_tdigest_column_puts_the_median_mass_at_the_median(n: int) -> None:
    """Pinot merges the t-digest column by weight: each centroid's weight must sit at its own ranks. The first
    version gave the remainder of n / 100 to the low centroids, and p50 came out at rank 0.40 for n = 150."""
    import random
    import struct

    import datasketches as ds

    from livedash.pipeline.aggregates import tdigest_bytes

    rng = random.Random(n)
    values = [rng.lognormvariate(4, 0.7) for _ in range(n)]
    kll = ds.kll_doubles_sketch(200)
    for v in values:
        kll.update(v)
    raw = tdigest_bytes(kll)
    _, _, _, _, m = struct.unpack_from(">idddi", raw)
    pairs = struct.unpack_from(f">{2 * m}d", raw, struct.calcsize(">idddi"))
    weights, means = pairs[0::2], pairs[1::2]
    assert sum(weights) == n and all(w == int(w) for w in weights)
    ordered = sorted(values)
    for q in (0.25, 0.5, 0.95):
        cum, i = 0.0, 0
        while cum + weights[i] < q * n:  # the centroid holding rank q * n
            cum += weights[i]
            i += 1
        rank = sum(1 for v in ordered if v <= means[i]) / n
        bound = 2 * ds.kll_doubles_sketch.get_normalized_rank_error(200, False) + 2 / min(n, 100)
        assert abs(rank - q) <= bound, (q, rank)


def test_tiers_route_rows_and_expired_windows_are_not_published() -> None:
    """History roll-ups go to their own topic; a recent roll-up's windows older than its tier's retention are
    not published (Pinot would only keep their upsert keys in memory until retention deleted them)."""
    cfg = PipelineSettings.model_validate(
        {
            **settings().model_dump(exclude={"rollups", "retention"}),
            "retention": {"recent_h": 1, "history_h": 24},
            "rollups": [
                {"name": "fine", "dimensions": ["type"], "window": {"size_s": 10}},
                {"name": "coarse", "dimensions": ["type"], "window": {"size_s": 300}, "tier": "history"},
            ],
        }
    )
    clock = InputClock()
    logic = PartitionLogic(cfg, clock, None)
    two_hours_ago = BASE - 7_200_000
    out = logic.on_batch([batch_of(records([(BASE, event(two_hours_ago)), (BASE, event(BASE))]))])[0]
    out += logic.on_eof()[0]
    published = {(o.role, orjson.loads(o.value)["rollup_name"], orjson.loads(o.value)["window_start"])
                 for o in out if isinstance(o, Out)}  # fmt: skip
    assert ("aggregates", "fine", BASE) in published
    assert ("history", "coarse", BASE) in published
    assert ("history", "coarse", two_hours_ago) in published  # within the history tier's 24 h
    assert ("aggregates", "fine", two_hours_ago) not in published  # beyond the recent tier's hour


def test_a_partition_far_behind_publishes_final_rows_only_until_it_catches_up() -> None:
    """Running values of windows a catch-up races through are stale at once: while the partition is more than
    provisional_max_lag behind the topic's end it publishes final rows only, then running values again."""
    cfg = settings(provisional_max_lag=100)
    clock = InputClock()
    end = {"offset": 10_000}
    logic = PartitionLogic(cfg, clock, None, end_offset=lambda partition: end["offset"])
    behind = records([(BASE + i * 1000, event(BASE + i * 1000)) for i in range(30)])
    out: list[Out] = []
    for rec in behind:
        clock.see(rec)
        out += logic.on_batch([batch_of([rec])])[0]
    published = rows(out)
    assert published and all(r["is_final"] for r in published)  # the windows it closed, nothing running
    assert finals(out, "tumble_10s")
    end["offset"] = 31  # caught up: the open windows' running values go out at the next publish
    clock.now += timedelta(seconds=1)
    running = [r for r in rows(logic.on_notify()[0]) if not r["is_final"]]
    assert {r["window_start"] for r in running if r["rollup_name"] == "tumble_10s"} == {BASE + 20_000}


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


class ListReader(StatefulSourcePartition[RecordBatch, int]):
    """One partition's batches, one per call; the snapshot is the index of the next batch. Aborts the run once
    at `abort_at` (a shared set, emptied by the abort, so the resumed run goes on)."""

    def __init__(self, batches: list[RecordBatch], start: int, clock: InputClock, abort_at: set[int]) -> None:
        self.batches, self.i, self.clock, self.abort_at = batches, start, clock, abort_at

    def next_batch(self) -> list[RecordBatch]:
        if self.i in self.abort_at and self.i > 0:
            self.abort_at.discard(self.i)
            raise AbortExecution()
        if self.i >= len(self.batches):
            raise StopIteration
        batch = self.batches[self.i]
        self.i += 1
        self.clock.now = max(self.clock.now, datetime.fromtimestamp(max(batch.timestamps) / 1000, UTC))
        return [batch]

    def snapshot(self) -> int:
        return self.i

    @property
    def partition(self) -> int:
        return self.batches[0].partition

    @property
    def next_offset(self) -> int:  # as the Kafka reader tells it (livedash.dataflow.source.Positioned)
        return self.batches[self.i].offsets[0] if self.i < len(self.batches) else self.batches[-1].offsets[-1] + 1


class ListBatches(FixedPartitionedSource[RecordBatch, int]):
    def __init__(self, recs: list[Record], size: int, clock: InputClock, abort_at: set[int] | None = None) -> None:
        self.parts: dict[str, list[RecordBatch]] = defaultdict(list)
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for rec in recs:
            by_partition[rec.partition].append(rec)
        for p, part in by_partition.items():
            self.parts[str(p)] = [batch_of(part[i : i + size]) for i in range(0, len(part), size)]
            for batch in self.parts[str(p)]:  # consecutive offsets come as a range from the Kafka source
                batch.offsets = range(batch.offsets[0], batch.offsets[-1] + 1)
        self.clock, self.abort_at = clock, abort_at if abort_at is not None else set()
        self.starts: dict[str, int] = {}  # where each partition last started (its resume state)

    def list_parts(self) -> list[str]:
        return sorted(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> ListReader:
        self.starts[for_part] = resume_state or 0
        return ListReader(self.parts[for_part], resume_state or 0, self.clock, self.abort_at)


@pytest.mark.parametrize("workers", [1, 2])
def test_windows_read_where_their_partition_is_read_give_what_the_keyed_step_gives(workers: int) -> None:
    """The shipped flow windows each partition inside its source partition (no exchange between workers);
    it must publish exactly what the keyed stateful step does on the same batches."""
    cfg = settings()
    recs = with_invalid(workload())
    keyed_out = run(cfg, recs, batch_size=1)
    keyed = final_state(keyed_out)
    clock = InputClock()
    out: list[Out] = []
    flow = build_windowed_flow(WindowedSource(ListBatches(recs, 13, clock), cfg, clock), TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    windowed = final_state(out)
    side = lambda o: sorted((x.role, x.headers, x.value) for x in o if isinstance(x, Out) and x.headers)  # noqa: E731
    assert side(out) == side(keyed_out)  # the same dead letters and late events
    assert {x.role for x in out if isinstance(x, Out) and x.headers} == {"dead_letter", "late"}
    assert valid_events(out) == valid_events(keyed_out)  # and the same valid events, in order, per partition
    assert windowed.keys() == keyed.keys()
    assert {r["source_partition"] for _, r in windowed.values()} == {0, 1, 2, 3}
    for pk, (version, row) in keyed.items():
        assert windowed[pk][0] == version
        assert strip_sketches(windowed[pk][1]) == strip_sketches(row)


def test_windowed_source_resumes_from_its_snapshot_exactly(tmp_path: Path) -> None:
    """Aborted mid-input and resumed from Bytewax's recovery store: offsets and windows come back together,
    and what both runs published leaves Pinot's upsert with exactly the rows of one uninterrupted run."""
    cfg = settings()
    whole = final_state(run(cfg, workload(), batch_size=1))
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    clock = InputClock()
    abort_at = {9}  # the first partition to reach its 10th batch (of 24, 13 messages each) aborts the run
    out: list[Out] = []
    batches = ListBatches(workload(), 13, clock, abort_at)
    source = WindowedSource(batches, cfg, clock)
    run_main(build_windowed_flow(source, TestingSink(out)), epoch_interval=timedelta(0), recovery_config=recovery)
    first = len(out)
    assert first and not abort_at  # stopped at the abort (Bytewax ends the execution quietly)
    assert whole.keys() - final_state(out).keys()  # some windows were not published yet
    run_main(build_windowed_flow(source, TestingSink(out)), epoch_interval=timedelta(0), recovery_config=recovery)
    assert len(out) > first
    assert all(start > 0 for start in batches.starts.values())  # resumed from the snapshots, not from scratch
    resumed = final_state(out)
    assert resumed.keys() == whole.keys()
    for pk, (version, row) in whole.items():
        assert resumed[pk][0] == version
        assert strip_sketches(resumed[pk][1]) == strip_sketches(row)


def test_the_backlog_shows_as_lag_at_the_resume_and_after_every_batch() -> None:
    """A catch-up can be over within a publish interval: a resumed partition reports its backlog before its
    first batch, and the lag follows every batch, not only every publish."""
    cfg = settings()
    clock = InputClock()
    recs = records([(BASE + i, event(BASE + i, user=f"u{i}")) for i in range(60)], partition=7, first_offset=100)
    source = WindowedSource(ListBatches(recs, 10, clock), cfg, clock, end_offset=lambda partition: 160)
    lag = lambda: REGISTRY.get_sample_value("livedash_consumer_lag_events", {"partition": "7"})  # noqa: E731
    fresh = source.build_part("kafka_in", "7", None)
    assert lag() is None  # nothing known before a fresh partition's first batch
    part = source.build_part("kafka_in", "7", {"offset": 2, "logic": None})  # resumed at its 3rd batch
    assert lag() == 40  # offsets 120..159 not read yet
    assert rows(part.next_batch())  # the first batch publishes at once
    assert lag() == 30
    assert not rows(part.next_batch())  # within the same second: no publish ...
    assert lag() == 20  # ... but the lag moved on
    fresh.close()


def test_a_kafka_batch_alone_does_not_start_a_garbage_collection() -> None:
    """The shipped flow raises the young generation's threshold above a Kafka batch's messages, and freezes
    what exists at start-up so full collections skip it."""
    old = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold()[0] > inspect.signature(KafkaBatchSource).parameters["batch_size"].default
        assert gc.get_freeze_count() > 0
        gc.collect(0)
        before = gc.get_stats()[0]["collections"]
        batch = [[] for _ in range(10_000)]  # GC-tracked objects, as confluent-kafka's messages are
        assert gc.get_stats()[0]["collections"] == before
        del batch
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
