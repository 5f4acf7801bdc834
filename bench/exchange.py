"""What the merge of per-partition partials costs when it crosses Bytewax workers (issue 16's riskiest step).

Each of 4 source partitions emits rounds of partials: one per (roll-up, window, group) that changed, holding
what a group's row holds (count, sums, min/max per metric, a Theta sketch and a KLL sketch as bytes). The
partials go either

  inline  into a merge kept inside the source partition (no exchange: what today's per-partition rows cost
          to merge, with no cross-partition merge),
  keyed   through a keyed step to one of --shards merge states (Bytewax places each key on the worker its
          hash names, so with two processes about half the partials are pickled and sent across)
  batched the same, one item per (partition, round, shard) holding that round's partials of the shard: fewer,
          larger items
  packed  batched, each item's partials encoded as one msgpack bytes value (msgspec): a single buffer to pickle

and the merge folds them (sums, min/max, Theta union, KLL merge). Prints partials per second of wall time
and per CPU second (all processes), the pickled bytes per partial, and one JSON object on its last line.

.venv/bin/python -m bench.exchange [--partials 800000] [--processes 1 2] [--modes inline keyed batched packed]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import subprocess
import sys
import time
import uuid
import zlib
from typing import Any

import bytewax.operators as op
import datasketches as ds
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from bench.common import machine, median
from livedash.config import PROJECT_ROOT

_ENCODE = msgspec.msgpack.Encoder().encode
_DECODE = msgspec.msgpack.Decoder().decode
PARTITIONS = 4
PER_ROUND = 2_000  # partials per partition and round (a round = one publish tick)
LG_K, KLL_K = 12, 200


def partials(partition: int, count: int, events_per_group: int, seed: int = 7) -> list[tuple[Any, ...]]:
    """Realistic partials: groups of a 4-dimension roll-up over a few windows, each from events_per_group
    events of distinct users with a latency."""
    rnd = random.Random(seed + partition)
    out = []
    for i in range(count):
        theta = ds.update_theta_sketch(LG_K)
        kll = ds.kll_doubles_sketch(KLL_K)
        for _ in range(events_per_group):
            theta.update(f"u{rnd.randrange(1_000_000)}")
            kll.update(rnd.expovariate(1 / 120))
        dims = ("page_view", f"c{i % 64}", f"d{i % 8}", f"o{(i // 8) % 16}")
        window = 1_795_960_800_000 + 10_000 * (i // 4096)
        out.append(("geo_10s", window, dims, events_per_group, [120.0 * events_per_group, 0.0], [1.0, 0.0],
                    [900.0, 0.0], [events_per_group, 0], theta.compact().serialize(), kll.serialize(), partition,
                    i))  # fmt: skip
    return out


class Merge:
    """Merged groups: (roll-up, window, dims) -> [count, sums, mins, maxs, counts, theta union, kll]."""

    def __init__(self) -> None:
        self.groups: dict[tuple[Any, ...], list[Any]] = {}
        self.folded = 0

    def fold(self, part: tuple[Any, ...]) -> None:
        rollup, window, dims, count, msum, mmin, mmax, mcount, theta, kll, _, _ = part
        key = (rollup, window, tuple(dims))  # msgpack gives lists back
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = [0, [0.0] * len(msum), list(mmin), list(mmax), [0] * len(msum),
                                    ds.theta_union(LG_K), ds.kll_doubles_sketch(KLL_K)]  # fmt: skip
        g[0] += count
        for i in range(len(msum)):
            g[1][i] += msum[i]
            g[4][i] += mcount[i]
            g[2][i] = min(g[2][i], mmin[i])
            g[3][i] = max(g[3][i], mmax[i])
        g[5].update(ds.compact_theta_sketch.deserialize(theta))
        g[6].merge(ds.kll_doubles_sketch.deserialize(kll))
        self.folded += 1


class _Part(StatefulSourcePartition[Any, None]):
    def __init__(self, partition: int, mode: str, total: int, shards: int, events_per_group: int) -> None:
        self.partition, self.mode, self.shards = partition, mode, shards
        self.pool = partials(partition, PER_ROUND, events_per_group)
        self.left = total
        self.merge = Merge()

    def next_batch(self) -> list[Any]:
        if self.left <= 0:
            raise StopIteration
        n = min(PER_ROUND, self.left)
        self.left -= n
        round_ = self.pool[:n]
        if self.mode == "inline":
            for part in round_:
                self.merge.fold(part)
            return [("n", n)]
        if self.mode == "keyed":
            return [(self.shard(p), p) for p in round_]
        by_shard: dict[str, list[tuple[Any, ...]]] = {}
        for p in round_:
            by_shard.setdefault(self.shard(p), []).append(p)
        if self.mode == "packed":
            return [(k, _ENCODE(v)) for k, v in by_shard.items()]
        return list(by_shard.items())

    def shard(self, part: tuple[Any, ...]) -> str:
        """A stable hash (str hashes differ between processes): every partition's partial of a group meets."""
        return f"s{zlib.crc32(repr((part[1], part[2])).encode()) % self.shards}"

    def next_awake(self) -> None:
        return None

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[Any, None]):
    def __init__(self, mode: str, total: int, shards: int, events_per_group: int) -> None:
        self.mode, self.total, self.shards, self.events_per_group = mode, total, shards, events_per_group

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(PARTITIONS)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(int(for_part), self.mode, self.total // PARTITIONS, self.shards, self.events_per_group)


class _Count(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class _Sink(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Count:
        return _Count()


def _merge_logic(_: Any) -> Any:
    from bytewax.operators import StatefulBatchLogic

    class Logic(StatefulBatchLogic[Any, Any, None]):
        def __init__(self) -> None:
            self.merge = Merge()

        def on_batch(self, values: list[Any]) -> tuple[list[Any], bool]:
            fold = self.merge.fold
            for v in values:
                if isinstance(v, bytes):
                    for part in _DECODE(v):
                        fold(part)
                elif isinstance(v, list):
                    for part in v:
                        fold(part)
                else:
                    fold(v)
            return [], False

        def snapshot(self) -> None:
            return None

    return Logic()


def flow() -> Dataflow:
    """The flow for one run, configured by the environment (set by main for each process)."""
    mode = os.environ["EXCHANGE_MODE"]
    src = _Source(mode, int(os.environ["EXCHANGE_TOTAL"]), int(os.environ["EXCHANGE_SHARDS"]),
                  int(os.environ["EXCHANGE_EVENTS_PER_GROUP"]))  # fmt: skip
    f = Dataflow("exchange_bench")
    items = op.input("in", f, src)
    if mode == "inline":
        op.output("out", items, _Sink())
    else:
        merged = op.stateful_batch("merge", items, _merge_logic)
        op.output("out", merged, _Sink())
    return f


def run(mode: str, processes: int, total: int, shards: int, events_per_group: int) -> tuple[float, float]:
    """(wall s, CPU s summed over the processes) for one run of the flow."""
    base = 24000 + (uuid.uuid4().int % 500) * 4
    addresses = ";".join(f"127.0.0.1:{base + i}" for i in range(processes))
    env = {**os.environ, "EXCHANGE_MODE": mode, "EXCHANGE_TOTAL": str(total), "EXCHANGE_SHARDS": str(shards),
           "EXCHANGE_EVENTS_PER_GROUP": str(events_per_group), "PYTHONPATH": str(PROJECT_ROOT)}  # fmt: skip
    cmd = [sys.executable, "-m", "bytewax.run", "bench.exchange:flow"]
    t0 = time.monotonic()
    before = os.times()
    procs = [
        subprocess.Popen(cmd + (["-i", str(i), "-a", addresses] if processes > 1 else []), env=env, cwd=PROJECT_ROOT)
        for i in range(processes)
    ]
    for p in procs:
        if p.wait(timeout=1800) != 0:
            raise SystemExit(f"the {mode} flow exited with {p.returncode}")
    after = os.times()
    wall = time.monotonic() - t0
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return wall, cpu


def setup_cost(events_per_group: int) -> float:
    """CPU s spent building the partials' pools (all partitions), subtracted from each run's CPU."""
    t0 = time.process_time()
    for p in range(PARTITIONS):
        partials(p, PER_ROUND, events_per_group)
    return time.process_time() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partials", type=int, default=800_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--modes", nargs="+", default=["inline", "keyed", "batched", "packed"])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--events-per-group", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sample = partials(0, 1000, args.events_per_group)
    size = len(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL)) / len(sample)
    setup = setup_cost(args.events_per_group)
    print(f"{args.partials:,} partials ({args.events_per_group} events per group), {size:.0f} pickled bytes each; "
          f"{args.shards} merge shards; pools cost {setup:.2f} CPU s per run")  # fmt: skip
    walls: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    for run_i in range(args.runs):
        for processes in args.processes:
            for mode in args.modes:
                wall, cpu = run(mode, processes, args.partials, args.shards, args.events_per_group)
                cpu = max(cpu - setup, 1e-9)
                name = f"{mode} x{processes}"
                walls.setdefault(name, []).append(args.partials / wall)
                cpus.setdefault(name, []).append(args.partials / cpu)
                print(f"run {run_i + 1} {name}: {wall:.1f} s wall, {cpu:.1f} CPU s: "
                      f"{args.partials / wall:,.0f} partials/s, {args.partials / cpu:,.0f} per CPU s")  # fmt: skip
    figures = {
        name: {"partials_per_s": round(median(walls[name])), "partials_per_cpu_s": round(median(cpus[name]))}
        for name in walls
    }
    for name, f in figures.items():
        per_s, per_cpu = f["partials_per_s"], f["partials_per_cpu_s"]
        print(f"median of {args.runs}, {name}: {per_s:,} partials/s, {per_cpu:,} per CPU s")
    print(f"machine: {machine()}")
    print(json.dumps({"pickled_bytes_per_partial": round(size), **figures}))


if __name__ == "__main__":
    main()
