"""The two-phase merge in the flow (windows.merge_shards): merge shards on the workers their keys name, one row
per window and group equal to the per-partition rows summed, and a partition without input not holding
windows open forever."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta
from typing import Any

import bytewax.operators as op
import orjson
import pytest
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.testing import TestingSink, TestingSource, cluster_main

from livedash.dataflow.logic import PartitionLogic, ShardTick
from livedash.dataflow.merging import MergeLogic
from livedash.dataflow.routing import shard_key, worker_of
from livedash.pipeline.merge import MERGED, MergeShard, unpack
from tests.dataflow_runs import BASE, InputClock, event, final_state, read_back, records, run, settings, workload
from tests.dataflow_scaffold import batch_of


def _threads_of(keys: list[str], workers: int) -> dict[str, int]:
    """key -> the thread Bytewax ran its state on, numbered in order of first appearance."""
    seen: dict[str, int] = {}
    threads: dict[int, int] = {}
    lock = threading.Lock()

    class Record(StatefulBatchLogic[str, str, None]):
        def on_batch(self, values: list[str]) -> tuple[list[str], bool]:
            with lock:
                t = threads.setdefault(threading.get_ident(), len(threads))
                seen.update(dict.fromkeys(values, t))
            return [], StatefulBatchLogic.RETAIN

        def snapshot(self) -> None:
            return None

    flow = Dataflow("routing")
    keyed = op.input("in", flow, TestingSource([(k, k) for k in keys]))
    op.output("out", op.stateful_batch("state", keyed, lambda _: Record()), TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return seen


@pytest.mark.parametrize("workers", [2, 4])
def test_routing_predicts_bytewax_and_shards_spread_evenly(workers: int) -> None:
    arbitrary = [f"k{i}" for i in range(24)] + ["0", "1", "2", "3", "p-0", "p-1"]
    shards = [shard_key(i) for i in range(8)]
    seen = _threads_of(arbitrary + shards, workers)
    # The model groups keys exactly as Bytewax does (thread numbers are arbitrary, the grouping is not).
    groups = {frozenset(k for k in seen if seen[k] == t) for t in set(seen.values())}
    model = {frozenset(k for k in seen if worker_of(k, workers) == w) for w in range(workers)}
    assert groups == model - {frozenset()}
    per_thread = defaultdict(int)
    for k in shards:
        per_thread[seen[k]] += 1
    assert sorted(per_thread.values()) == [8 // workers] * workers


def _sum_by_window(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """(roll-up, window, dims) -> count, sum, value count, min, max over every row of the key (partitions)."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        if r["kind"] != "window":
            continue
        key = (r["rollup_name"], r["window_start"], r["type"], r["country"])
        have = out.setdefault(key, [0, 0.0, 0, float("inf"), float("-inf"), True])
        have[0] += r["event_count"]
        have[1] += r["latency_ms_sum"]
        have[2] += r["latency_ms_count"]
        have[3] = min(have[3], r["latency_ms_min"])
        have[4] = max(have[4], r["latency_ms_max"])
        have[5] = have[5] and bool(r["is_final"])
    return {k: tuple(v) for k, v in out.items()}


@pytest.mark.parametrize(("workers", "shards"), [(1, 1), (1, 3), (2, 4)])
def test_merged_rows_are_the_partitions_rows_summed(workers: int, shards: int) -> None:
    recs = workload()
    per_partition = [row for _, row in final_state(run(settings(), recs, batch_size=13)).values()]
    merged = [row for _, row in final_state(run(settings(merge_shards=shards), recs, workers, 13)).values()]
    assert {r["source_partition"] for r in merged if r["kind"] == "window"} == {MERGED}
    assert _sum_by_window(merged) == _sum_by_window(per_partition)
    # one row per window and group: fewer than one per partition
    assert len([r for r in merged if r["kind"] == "window"]) < len([r for r in per_partition if r["kind"] == "window"])
    late = lambda rows: sorted(orjson.dumps(r) for r in rows if r["kind"] == "late")  # noqa: E731
    assert late(merged) == late(per_partition)  # corrections stay per partition, unchanged
    for r in merged:
        if r["kind"] == "window":
            assert r["version"] == 2 * r["event_count"] + r["is_final"]


def test_a_partition_without_input_lets_the_merged_windows_become_final() -> None:
    """Partition 1 never gets an event: after the idle timeout it proposes the clock (minus the timeout) as
    its watermark through a marker, and once read back the shard may close the windows partition 0 closed."""
    cfg = settings(merge_shards=1)
    clock = InputClock()
    busy, quiet = PartitionLogic(cfg, clock, None), PartitionLogic(cfg, clock, None)
    busy.start(0)
    quiet.start(1)
    shard = MergeShard(cfg, [0, 1])
    ticks: list[ShardTick] = []
    recs = records([(BASE + i * 1000, event(BASE + i * 1000)) for i in range(40)])
    for rec in recs:
        clock.see(rec)
        ticks += [o for o in busy.on_batch([batch_of([rec])])[0] if isinstance(o, ShardTick)]
        ticks += [o for o in quiet.on_notify()[0] if isinstance(o, ShardTick)]
    for t in ticks:
        shard.fold(unpack(t.payload))
    assert not [r for r in shard.publish() if orjson.loads(r.value)["is_final"]]  # partition 1 holds them open
    clock.now += timedelta(seconds=30)
    out = quiet.on_notify()[0]
    assert [o for o in out if getattr(o, "role", None) == "marker"]
    back = read_back([o for o in out if not isinstance(o, ShardTick)], clock, 0)  # type: ignore[arg-type]
    quiet.on_batch(back)
    clock.now += timedelta(seconds=2)
    for t in [o for o in quiet.on_notify()[0] if isinstance(o, ShardTick)]:
        shard.fold(unpack(t.payload))
    finals = [orjson.loads(r.value) for r in shard.publish() if r.role != "live"]  # not the live table's copies
    closed = {r["window_start"] for r in finals if r["is_final"] and r["rollup_name"] == "tumble_10s"}
    assert BASE in closed  # partition 0's watermark passed BASE + 10 s + lateness long ago
    assert sum(r["event_count"] for r in finals if r["is_final"] and r["window_start"] == BASE
               and r["rollup_name"] == "tumble_10s") == 10  # fmt: skip


def test_a_quiet_input_lets_the_merge_show_sliding_windows_not_yet_current() -> None:
    """Sliding windows are published once current (they churn until then); when no partition has sent a
    partial for the idle timeout nothing churns any more, so the shard shows what the others hold, as a quiet
    partition does without the merge (else they would wait for the clock to pass their end)."""
    cfg = settings(merge_shards=1)
    clock = InputClock()
    part = PartitionLogic(cfg, clock, None)
    part.start(0)
    merge = MergeLogic(cfg, [0], clock, None)

    def sliding(out: list[Any]) -> dict[int, int]:
        got = [orjson.loads(o.value) for batch in out for o in batch.outs]
        return {r["window_start"]: r["event_count"] for r in got if r["rollup_name"] == "slide_30s"}

    seen: dict[int, int] = {}
    for rec in records([(BASE + i * 1000, event(BASE + i * 1000)) for i in range(40)]):
        clock.see(rec)
        ticks = [o.payload for o in part.on_batch([batch_of([rec])])[0] if isinstance(o, ShardTick)]
        seen.update(sliding(merge.on_batch(ticks)[0]))
    assert BASE + 10_000 in seen and BASE + 20_000 not in seen  # ends after the watermark + a pane: not current
    clock.now += timedelta(seconds=5)
    assert not sliding(merge.on_notify()[0])  # not quiet yet
    clock.now += timedelta(seconds=6)
    assert merge.notify_at() is not None
    later = sliding(merge.on_notify()[0])
    assert later == {BASE + 20_000: 20, BASE + 30_000: 10}
    assert not merge.shard.has_pending()
