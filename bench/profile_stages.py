"""Where a dataflow process' time goes, from py-spy's raw (collapsed-stack) output: the shares of the Bytewax worker
threads' samples by stage, as docs/benchmarks.md reports them. Record first, for example both processes of a
2-process bench.peers run:

    .venv/bin/py-spy record --native --idle --rate 50 --duration 10 --format raw -o p0.txt --pid PID
    .venv/bin/python -m bench.profile_stages p0.txt [p1.txt ...]

A sample counts as waiting for the GIL when it ends in a condition wait under Python frames (the worker never
parks in the runs measured); otherwise the first stage, from the leaf up, whose pattern a frame matches.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

WORKER = "worker_main"  # frames of Bytewax's worker threads, where all the dataflow's Python runs
GIL_WAIT = re.compile(r"pthread_cond")
STAGES = [  # checked from the leaf upward; the first match wins
    ("consumer lag (watermark queries)", re.compile(r"get_watermark_offsets")),
    ("garbage collector", re.compile(r"gc_collect|collect_main")),
    ("freeing the decoded events", re.compile(r"dealloc|_PyObject_Free")),
    ("msgspec decode", re.compile(r"msgspec|json_decode|mpack|\(decode")),
    ("Kafka consume() and its Message objects", re.compile(r"rd_kafka|Consumer_consume|consume \(|cimpl")),
    ("folding: sums, min and max, Theta and KLL", re.compile(r"add_many|datasketches|theta|kll|_fold|fsum")),
    ("windowing and routing", re.compile(r"add_batch|PartitionWindows|route|pane|windows\.py")),
    ("validation after decode", re.compile(r"parse_batch|contract\.py|Validator")),
    ("the batch's columns", re.compile(r"kafka_source\.py|kafka/source\.py")),
    ("output rows and publishing", re.compile(r"publish|rows|to_row|orjson|produce")),
]
OTHER = "Bytewax runtime, metrics, snapshots, other"


def stage(frames: list[str]) -> str:
    if any(GIL_WAIT.search(f) for f in frames[-3:]):
        return "waiting for the GIL"
    for name, pattern in STAGES:
        if any(pattern.search(f) for f in reversed(frames)):
            return name
    return OTHER


def worker_shares(paths: list[Path]) -> tuple[int, Counter[str]]:
    """Samples of the worker threads in all the files, and their count per stage."""
    counts: Counter[str] = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if WORKER in stack:
                counts[stage(stack.split(";"))] += int(n)
    return sum(counts.values()), counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("raw", nargs="+", type=Path, help="py-spy record --format raw output, one per process")
    args = parser.parse_args()
    total, counts = worker_shares(args.raw)
    if not total:
        raise SystemExit(f"no {WORKER} frames: record with --native (and --idle to see the GIL waits)")
    print(f"{total:,} samples of the Bytewax worker threads in {len(args.raw)} file(s)")
    for name, n in counts.most_common():
        print(f"{n / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
