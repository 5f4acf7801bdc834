"""What the dataflow's state holds over time at a live rate: the pipeline's logic (bench.hotpath's drive, live,
the input generated as it is consumed) for --minutes of event time at --event-rate, with the resident memory
and the size of each part of the state every --every minutes of event time, and what a snapshot costs (one
every --snapshot-s of event time, as the dataflow's; their CPU is in the run's). Kafka, Bytewax and librdkafka are
not in it: a resident memory that grows here grows in the pipeline's own state; one that grows only in the
running dataflow (bench.dataflow, psutil on the process) grows outside it.

.venv/bin/python -m bench.memory [--minutes 60] [--event-rate 2000] [--every 5] [--snapshot-s 30]
    [--pipeline config/pipeline.yaml]

Parts, each as the pickled bytes of its snapshot (what Bytewax stores at every epoch, and a fair proxy for the
objects behind it) and its groups: per roll-up the partitions' panes (folded events and their caps' routes),
the merge shards' panes, the cascade's open derived windows; the late corrections; the duplicate ids.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import pickle
import time
import tracemalloc
from collections import Counter
from pathlib import Path

import psutil
import yaml

from bench.common import machine
from bench.hotpath import drive, stream
from livedash.dataflow import heap
from livedash.dataflow.flow import tune_gc
from livedash.dataflow.logic import PartitionLogic, collector_paused
from livedash.pipeline.aggregates import unpack_state
from livedash.pipeline.merge import MergeShard
from livedash.pipeline.settings import PipelineSettings

ROOT = Path(__file__).resolve().parent.parent


def parts(logics: dict[int, PartitionLogic], shards: dict[str, MergeShard]) -> tuple[Counter[str], Counter[str]]:
    """Pickled bytes and groups (ids for dedup) of each part of the state."""
    size: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    for logic in logics.values():
        state = logic.snapshot()
        size["dedup ids"] += len(pickle.dumps(state["dedup"]))
        groups["dedup ids"] += logic.dedup.remembered
        windows = state["windows"]
        names = [r.name for r in logic.settings.rollups]
        for name, saved in zip(names, windows["rollups"], strict=True):
            size[f"{name} partition panes"] += len(pickle.dumps(saved))
            groups[f"{name} partition panes"] += sum(len(unpack_state(pane)[0]) for pane in saved["panes"].values())
        for d, level in windows["cascade"].items():
            size[f"{names[d]} cascade"] += len(pickle.dumps(level))
            groups[f"{names[d]} cascade"] += sum(len(g) for g in level.values())
        size["late corrections"] += len(pickle.dumps(windows["late"]))
        groups["late corrections"] += len(windows["late"][1])
    for shard in shards.values():
        state = shard.snapshot()
        names = [r.name for r in shard.settings.rollups]
        for name, saved in zip(names, state["rollups"], strict=True):
            size[f"{name} shard panes"] += len(pickle.dumps(saved))
            groups[f"{name} shard panes"] += sum(
                len(g) for pane in saved["panes"].values() for _, g in unpack_state(pane)[0]
            )
        for d, level in state["cascade"].items():
            size[f"{names[d]} cascade"] += len(pickle.dumps(level))
            groups[f"{names[d]} cascade"] += sum(len(g) for g in level.values())
    return size, groups


def snapshot_cost(logics: dict[int, PartitionLogic], shards: dict[str, MergeShard]) -> tuple[float, float, int]:
    """CPU seconds to build every partition's and shard's snapshot, and to pickle each as one object (what
    Bytewax does at every epoch), and the pickled bytes. A group's snapshot form is cached until it changes, so
    the cost depends on how much changed since the last snapshot: call it at the dataflow's interval."""
    t0 = time.process_time()
    states = [logic.snapshot() for logic in logics.values()]
    with collector_paused():  # as MergeLogic.snapshot
        states += [shard.snapshot() for shard in shards.values()]
    t1 = time.process_time()
    size = sum(len(pickle.dumps(state)) for state in states)
    return t1 - t0, time.process_time() - t1, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0, help="event time to run for")
    parser.add_argument("--event-rate", type=float, default=2000.0, help="nominal events per second (generator's)")
    parser.add_argument("--every", type=float, default=5.0, help="minutes of event time between reports")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--late", type=float, default=0.01, help="fraction of events minutes behind")
    parser.add_argument("--pipeline", default=str(ROOT / "config" / "pipeline.yaml"))
    parser.add_argument(
        "--trim",
        action="store_true",
        help="at each report, also the resident memory after a full collection and malloc_trim(0) "
        "(what the allocator held but the program had freed)",
    )
    parser.add_argument("--traced", type=int, default=0,
                        help="trace Python's allocations (slow): at each report, the N lines whose live memory "
                             "grew most since the last")  # fmt: skip
    parser.add_argument("--snapshot-s", type=float, default=30.0,
                        help="seconds of event time between snapshots, built and pickled as the dataflow does at "
                             "every epoch (its snapshot_s); 0: none")  # fmt: skip
    parser.add_argument(
        "--census",
        action="store_true",
        help="at each report, the live objects by type that the collector tracks (and their change)",
    )
    args = parser.parse_args()
    census: Counter[str] = Counter()
    if args.traced:
        tracemalloc.start(1)
    last_trace: list[tracemalloc.Snapshot] = []
    tune_gc()  # as the shipped dataflow process does
    heap.fix_mmap_threshold()
    settings = PipelineSettings.model_validate(yaml.safe_load(Path(args.pipeline).read_text()))
    # one round of batches per second of event time, as bench.hotpath --live: batch = rate / partitions
    batch = max(1, round(args.event_rate / args.partitions))
    events = int(args.minutes * 60 * args.event_rate)
    me = psutil.Process()
    t0 = time.process_time()
    series: list[dict[str, object]] = []
    due = [0, 0]  # the next report's and the next snapshot's event counts
    step = int(args.every * 60 * args.event_rate)
    snap_step = int(args.snapshot_s * args.event_rate)
    snaps: list[tuple[float, float, int]] = []  # since the last report

    def observe(n: int, logics: dict[int, PartitionLogic], shards: dict[str, MergeShard]) -> None:
        if snap_step and n >= due[1]:  # as the dataflow does every snapshot_s (its CPU counted as the run's)
            due[1] += snap_step
            snaps.append(snapshot_cost(logics, shards))
        if n < due[0]:
            return
        due[0] += step
        cpu = time.process_time() - t0
        build_s, pickle_s, snap_bytes = (
            (sum(c[0] for c in snaps) / len(snaps), sum(c[1] for c in snaps) / len(snaps), snaps[-1][2])
            if snaps
            else (0.0, 0.0, 0)
        )
        snaps.clear()
        size, groups = parts(logics, shards)
        rss = me.memory_info().rss
        series.append(
            {
                "events": n,
                "rss_mb": round(rss / 1e6),
                "state_mb": round(size.total() / 1e6, 1),
                "snapshot_build_ms": round(build_s * 1000),
                "snapshot_pickle_ms": round(pickle_s * 1000),
            }
        )
        print(f"{n / args.event_rate / 60:6.1f} min, {n:>10,} events, {cpu:7.1f} CPU s: resident {rss / 1e6:,.0f} MB,"
              f" state pickled {size.total() / 1e6:,.1f} MB")  # fmt: skip
        print(f"    a snapshot every {args.snapshot_s:g} s: {build_s * 1000:,.0f} ms to build, "
              f"{pickle_s * 1000:,.0f} ms"
              f" to pickle (means since the last report), {snap_bytes / 1e6:,.1f} MB")  # fmt: skip
        for name, b in size.most_common(8):
            print(f"    {name:<32} {b / 1e6:8.1f} MB  {groups[name]:>10,} groups")
        if args.census:
            now = Counter(type(o).__name__ for o in gc.get_objects())
            print(
                "    live objects: "
                + ", ".join(f"{name} {k:,} ({k - census[name]:+,})" for name, k in now.most_common(12))
            )
            census.clear()
            census.update(now)
        if args.trim:
            gc.collect()
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            print(f"    after gc.collect() and malloc_trim(0): resident {me.memory_info().rss / 1e6:,.0f} MB")
        if args.traced:
            snap = tracemalloc.take_snapshot()
            traced = sum(stat.size for stat in snap.statistics("filename"))
            print(f"    Python's own allocations: {traced / 1e6:,.0f} MB")
            if last_trace:
                for stat in snap.compare_to(last_trace[0], "lineno")[: args.traced]:
                    print(f"      {stat.size_diff / 1e6:+8.1f} MB  {stat.count_diff:+10,} blocks  {stat.traceback[0]}")
            last_trace[:] = [snap]

    n, rows = drive(settings, stream(events, args.partitions, batch, args.event_rate, args.late), live=True,
                    partitions=args.partitions, observe=observe)  # fmt: skip
    cpu = time.process_time() - t0
    print(f"{n:,} events, {rows.total():,} rows out, {cpu:.1f} CPU s ({n / cpu:,.0f} events per CPU s, input "
          f"generation included); machine: {machine()}")  # fmt: skip
    first, last = series[1] if len(series) > 1 else series[0], series[-1]
    print(json.dumps({"minutes": args.minutes, "event_rate": args.event_rate, "rss_mb_first": first["rss_mb"],
                      "rss_mb_last": last["rss_mb"], "state_mb_last": last["state_mb"], "series": series}))  # fmt: skip


if __name__ == "__main__":
    main()
