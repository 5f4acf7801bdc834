"""PartitionLogic: dead letters, idle partitions and markers, snapshots, catching up, lag."""

from __future__ import annotations

import pickle
from datetime import timedelta

import orjson
from prometheus_client import REGISTRY

from livedash.dataflow.logic import PartitionLogic
from livedash.dataflow.source import WindowedSource
from livedash.kafka.messages import Out
from livedash.pipeline.marker import MARKER_KEY, parse_marker
from tests.dataflow_runs import (
    BASE,
    InputClock,
    ListBatches,
    event,
    final_state,
    finals,
    read_back,
    records,
    rows,
    run,
    settings,
    strip_sketches,
)
from tests.dataflow_scaffold import Record, batch_of


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
    assert [o.role for o in out if o.role not in ("aggregates", "live")] == ["dead_letter", "valid"]
    assert logic.windows is not None and logic.windows.events_in == 1


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
