"""The flow end to end on fixed clocks: workers, totals, snapshot and restore, batch sizes, GC."""

from __future__ import annotations

import gc
import inspect
from collections import Counter, defaultdict

import pytest

from livedash.dataflow.flow import tune_gc
from livedash.dataflow.logic import PartitionLogic
from livedash.kafka.messages import Out
from livedash.kafka.source import KafkaBatchSource
from tests.dataflow_runs import (
    InputClock,
    final_state,
    run,
    settings,
    strip_sketches,
    with_invalid,
    workload,
)
from tests.dataflow_scaffold import Record, batch_of


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
