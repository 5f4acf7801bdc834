"""The dataflow's per-event work without Kafka or Bytewax: parse, validate, window and publish, in one process.

Generates events as `bench.peers` does (4 partitions, event time at --event-rate per second), cuts each
partition into batches as the Kafka source does, and drives `PartitionLogic` on a fixed clock that moves one
second per round of batches. Prints events per second of CPU for the pipeline file given (the peers' task by
default), and with --profile the top of a cProfile by own time.

.venv/bin/python -m bench.hotpath [--events 1000000] [--pipeline bench/peers/pipeline-task.yaml] [--profile]
    [--snapshot-events 600000] [--segments] [--bare | --compare] [--merge-shards N] [--row-bytes]

--bare: without dropping duplicates and without encoding the valid events; --compare: with both, neither, and
each alone, alternating run by run (what the two cost, less the produce of each valid event, which needs Kafka:
bench.dataflow --variants shipped,bare measures it all). --merge-shards N: the two-phase merge (windows.merge_shards),
its shards in the same process (their work, not the crossing between workers: bench.exchange measures that).
--row-bytes: the aggregate rows out and their bytes per roll-up, provisional and final (the JSON as sent, and the
sketch columns as the bytes Pinot keeps): what the roll-up tables and topics grow by.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pickle
import pstats
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psutil
import yaml

from bench.common import machine, median
from livedash.dataflow.flow import tune_gc
from livedash.dataflow.logic import PartitionLogic, ShardTick
from livedash.generator import GeneratorOptions, generate
from livedash.kafka.source import RecordBatch
from livedash.pipeline.merge import MergeShard, unpack
from livedash.pipeline.rows import DISTINCT, QUANTILE_TDIGEST
from livedash.pipeline.settings import DedupSettings, PipelineSettings, TopicNames

HERE = Path(__file__).parent
START_MS = 1_795_960_800_000  # fixed: the generator's daily rhythm, and so the work, depends on the time of day


def stream(events: int, partitions: int, batch: int, event_rate: float,
           late: float = 0.0) -> Iterator[list[RecordBatch]]:  # fmt: skip
    """Rounds of one batch per partition, in order, generated as they are asked for: events go to partitions
    round robin. late: the fraction of events minutes behind (the generator's late_fraction)."""
    opts = GeneratorOptions(seed=6, nominal_rate=event_rate, late_fraction=late, malformed_fraction=0.0)
    per: list[list[bytes]] = [[] for _ in range(partitions)]
    sent = [0] * partitions  # offsets so far
    i = 0

    def cut(final: bool) -> Iterator[list[RecordBatch]]:
        while per[-1] and (final or all(len(v) >= batch for v in per)):
            out = []
            for p, vals in enumerate(per):
                take, per[p] = vals[:batch], vals[batch:]
                if take:
                    out.append(RecordBatch(p, list(range(sent[p], sent[p] + len(take))),
                                           [START_MS + 3_600_000] * len(take), [None] * len(take),
                                           take))  # type: ignore[arg-type]  # fmt: skip
                    sent[p] += len(take)
            yield out
        if final and any(per):  # the first partitions' tail
            yield [RecordBatch(p, list(range(sent[p], sent[p] + len(v))), [START_MS + 3_600_000] * len(v),
                               [None] * len(v), v) for p, v in enumerate(per) if v]  # type: ignore[arg-type]  # fmt: skip

    for chunk in generate(events, START_MS, opts):
        for value in chunk.values:
            per[i % partitions].append(value)
            i += 1
        yield from cut(False)
    yield from cut(True)


def batches(events: int, partitions: int, batch: int, event_rate: float,
            late: float = 0.0) -> list[list[RecordBatch]]:  # fmt: skip
    """stream(), all of it at once (the input's CPU is then not counted in the runs)."""
    return list(stream(events, partitions, batch, event_rate, late))


Segment = tuple[int, float, int, int]  # events so far, CPU s so far, last snapshot's bytes, resident bytes


class RowSizes:
    """Aggregate rows out and their bytes per (roll-up, provisional or final)."""

    SKETCHES = (DISTINCT, QUANTILE_TDIGEST)

    def __init__(self) -> None:
        self.by: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)

    def add(self, value: bytes, role: str) -> None:
        row = orjson.loads(value)
        kind = ("final, live copy" if role == "live" else "final") if row["is_final"] else "provisional"
        tally = self.by[(row["rollup_name"], kind)]
        tally["rows"] += 1
        tally["json"] += len(value)
        for column in self.SKETCHES:
            if row.get(column):
                tally[column] += len(row[column]) // 2  # hex in the JSON, bytes in Pinot

    def report(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for (name, state), tally in sorted(self.by.items()):
            total.update(tally)
            sketches = ", ".join(f"{c} {tally[c] / 1e6:,.1f}" for c in self.SKETCHES if tally[c])
            print(f"  {name:<16} {state:<11} {tally['rows']:>9,} rows, JSON {tally['json'] / 1e6:>7,.1f} MB; "
                  f"sketch bytes (MB): {sketches}")  # fmt: skip
        print(f"  all: {total['rows']:,} rows, JSON {total['json'] / 1e6:,.1f} MB, sketch bytes "
              f"{sum(total[c] for c in self.SKETCHES) / 1e6:,.1f} MB")  # fmt: skip
        return {"rows": total["rows"], "json_bytes": total["json"],
                "sketch_bytes": sum(total[c] for c in self.SKETCHES)}  # fmt: skip


Observer = Callable[[int, dict[int, PartitionLogic], dict[str, MergeShard]], None]  # events so far, the state


def drive(settings: PipelineSettings, rounds: Iterable[list[RecordBatch]], snapshot_events: int = 0,
          segments: list[Segment] | None = None, live: bool = False, partitions: int = 4,
          observe: Observer | None = None, sizes: RowSizes | None = None) -> tuple[int, Counter[str]]:  # fmt: skip
    """Events and output rows by topic role (aggregates, history, valid, late, ...): every partition's logic fed
    its batches, publishing once per round. The end offsets are the input's ends, as for a pre-filled topic:
    provisional rows wait until the lag is small.
    live: each batch ends its topic (no lag), so open windows publish every round, as at a live rate.
    With snapshot_events, every partition's state is snapshotted and pickled (as Bytewax does at each epoch)
    each time that many more events went in. Segments collects (events so far, CPU s so far, snapshot bytes,
    resident bytes) after each round, and observe (if given) sees the state after each round. Live, rounds may
    be a stream (its end is not known ahead); otherwise it is read twice: its ends first. sizes (if given)
    tallies the aggregate rows' bytes."""
    # an hour after the first event; live: the clock moves with the event time, a few seconds ahead
    now = [datetime.fromtimestamp(START_MS / 1000 + (5 if live else 3600), UTC)]
    if live:
        ends = known = dict.fromkeys(range(partitions), 0)  # the end offsets the partitions see
    else:
        assert isinstance(rounds, list), "a pre-filled input is read twice"
        ends = known = {b.partition: b.offsets[-1] + 1 for r in rounds for b in r}
    logics: dict[int, PartitionLogic] = {}
    shards: dict[str, MergeShard] = {}
    events = snap_bytes = 0
    rows: Counter[str] = Counter()

    def count(out: list[Any]) -> None:
        """Rows out; with the merge, the ticks are folded into their shards, which publish."""
        for o in out:
            if isinstance(o, ShardTick):
                shard = shards.get(o.shard)
                if shard is None:
                    shard = shards[o.shard] = MergeShard(settings, sorted(ends))
                shard.fold(unpack(o.payload))
            else:
                rows[o.role] += 1
                if sizes is not None and o.role in ("aggregates", "history", "live"):
                    sizes.add(o.value, o.role)

    next_snapshot = snapshot_events
    me = psutil.Process()
    t0 = time.process_time()
    for batches_ in rounds:
        now[0] += timedelta(seconds=1)
        for b in batches_:
            logic = logics.get(b.partition)
            if logic is None:
                logic = logics[b.partition] = PartitionLogic(settings, lambda: now[0], None, known.get)
            if live:
                known[b.partition] = b.offsets[-1] + 1
            out, _ = logic.on_batch([b])
            count(out)
            events += len(b)
        for shard in shards.values():
            shard.now_ms = int(now[0].timestamp() * 1000)
            count(shard.publish())
        if snapshot_events and events >= next_snapshot:
            next_snapshot += snapshot_events
            snap_bytes = sum(len(pickle.dumps(logic.snapshot())) for logic in logics.values())
        if segments is not None:
            segments.append((events, time.process_time() - t0, snap_bytes, me.memory_info().rss))
        if observe is not None:
            observe(events, logics, shards)
    for logic in logics.values():
        out, _ = logic.on_eof()
        count(out)
    for shard in shards.values():
        count(shard.publish(flush=True))
    return events, rows


def report_segments(segments: list[Segment], parts: int = 10) -> None:
    """Events per CPU second in each tenth of the input, the last snapshot's size and the process's resident
    memory: a rate that falls or memory that grows with the state shows here."""
    total = segments[-1][0]
    last_n, last_cpu = 0, 0.0
    for n, cpu, snap, rss in segments:
        if n - last_n >= total / parts or n == total:
            print(f"  events {last_n:>12,} to {n:>12,}: {(n - last_n) / (cpu - last_cpu):>10,.0f} events per CPU s,"
                  f" last snapshot {snap / 1e6:,.1f} MB, resident {rss / 1e6:,.0f} MB")  # fmt: skip
            last_n, last_cpu = n, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--event-rate", type=float, default=200_000.0)
    parser.add_argument("--pipeline", default=str(HERE / "peers" / "pipeline-task.yaml"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--snapshot-events",
        type=int,
        default=0,
        help="snapshot and pickle every partition's state each time this many events went in",
    )
    parser.add_argument("--segments", action="store_true", help="events per CPU s in each tenth of the input")
    parser.add_argument("--bare", action="store_true", help="no duplicates check, no valid events")
    parser.add_argument("--compare", action="store_true", help="bare, dedup, valid and both, alternating per run")
    parser.add_argument("--merge-shards", type=int, default=None, help="windows.merge_shards (default: the file's)")
    parser.add_argument("--live", action="store_true",
                        help="no lag: open windows publish every round (with --batch events per partition a round, "
                             "--event-rate 4 * batch is a live stream: 1 s of event time per second)")  # fmt: skip
    parser.add_argument("--late", type=float, default=0.0, help="fraction of events minutes behind (generator's)")
    parser.add_argument("--row-bytes", action="store_true",
                        help="rows and bytes per roll-up, each run (parsing them counts in the CPU s)")  # fmt: skip
    args = parser.parse_args()
    tune_gc()  # as the shipped dataflow process does
    configured = PipelineSettings.model_validate(yaml.safe_load(Path(args.pipeline).read_text()))
    if args.merge_shards is not None:
        windows = configured.windows.model_copy(update={"merge_shards": args.merge_shards})
        configured = configured.model_copy(update={"windows": windows})
    variants = {"as configured": configured}
    if args.compare:
        variants = {"bare": variant(configured, False, False), "dedup": variant(configured, True, False),
                    "valid": variant(configured, False, True), "both": variant(configured, True, True)}  # fmt: skip
    elif args.bare:
        variants = {"bare": variant(configured, False, False)}
    rounds = batches(args.events, args.partitions, args.batch, args.event_rate, args.late)
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        drive(next(iter(variants.values())), rounds, args.snapshot_events, live=args.live, partitions=args.partitions)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for run in range(args.runs):
        for name, settings in variants.items():
            segments: list[Segment] = []
            sizes = RowSizes() if args.row_bytes else None
            t0 = time.process_time()
            n, rows = drive(settings, rounds, args.snapshot_events, segments, args.live, args.partitions,
                            sizes=sizes)  # fmt: skip
            cpu = time.process_time() - t0
            rates[name].append(n / cpu)
            roles = ", ".join(f"{role} {k:,}" for role, k in sorted(rows.items()))
            print(f"run {run + 1} {name}: {n:,} events, {rows.total():,} rows out ({roles}), {cpu:.2f} CPU s: "
                  f"{rates[name][-1]:,.0f} events per CPU s")  # fmt: skip
            if args.segments:
                report_segments(segments)
            if sizes is not None:
                print(f"  per event: {sizes.report()['json_bytes'] / n:,.0f} bytes of rows (JSON)")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {machine()}; peak RSS {peak:,.0f} MB (the input batches included)")
    figures = {name: round(median(r)) for name, r in rates.items()}
    for name, rate in figures.items():
        print(f"median of {args.runs}, {name}: {rate:,} events per CPU second ({Path(args.pipeline).name}), "
              f"{1e6 / rate:.2f} CPU us per event")  # fmt: skip
    print(json.dumps(figures))


def variant(settings: PipelineSettings, dedup: bool, valid: bool) -> PipelineSettings:
    """The pipeline with duplicates dropped or not (horizon 0) and valid events encoded or not: the configured
    horizon and valid topic where asked, and where the file switches them off, the defaults."""
    horizon = (settings.dedup.horizon_s or DedupSettings().horizon_s) if dedup else 0
    topic = (settings.topics.valid or TopicNames().valid) if valid else None
    return settings.model_copy(update={"dedup": settings.dedup.model_copy(update={"horizon_s": horizon}),
                                       "topics": settings.topics.model_copy(update={"valid": topic})})  # fmt: skip


if __name__ == "__main__":
    main()
