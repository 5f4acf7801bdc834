"""The floor under the dataflow's cost per event: reading a pre-filled topic with the product's Kafka source, and
that plus parsing (msgspec decode and the contract's checks), in one process, with no windowing, no Bytewax and
no output. What two processes can reach at most on two cores follows from it (issue 6: the 1,000,000 events/s
target), since the dataflow does all of this and more for every event.

    .venv/bin/python -m bench.floor [--events 3000000] [--runs 3]

Needs the dev stack (`bin/livedash up`). Pre-fills one topic (4 partitions, the peers' events), then reads it
whole once per stage and run, stages alternating, and prints events per CPU second (every thread of this
process: librdkafka's included) and events per second, medians over the runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import UTC, datetime

import yaml

from bench.common import machine, median
from bench.peers.__main__ import HERE as PEERS_DIR
from bench.peers.__main__ import prefill
from livedash.dataflow.flow import tune_gc
from livedash.kafka.source import KafkaBatchSource, RecordBatch
from livedash.pipeline.contract import Validator
from livedash.pipeline.settings import PipelineSettings


def read_all(source: KafkaBatchSource, events: int, work: Callable[[RecordBatch], int]) -> tuple[float, float, int]:
    """Every partition read as one Bytewax worker would (round robin over the partitions' readers), `work` on
    each batch. Returns (CPU s, wall s, what work counted)."""
    parts = [source.build_part("floor", p, None) for p in source.list_parts()]
    got = counted = 0
    cpu0, t0 = time.process_time(), time.monotonic()
    try:
        while got < events:
            now = datetime.now(UTC)
            ready = [part for part in parts if part.awake is None or part.awake <= now]
            if not ready:  # as Bytewax does: a partition that found nothing is polled again at its next_awake
                time.sleep(max(0.0, (min(p.awake for p in parts if p.awake) - now).total_seconds()))
            for part in ready:
                for batch in part.next_batch():
                    got += len(batch)
                    counted += work(batch)
            if time.monotonic() - t0 > 600:
                raise TimeoutError(f"read {got:,} of {events:,} events in 600 s")
        return time.process_time() - cpu0, time.monotonic() - t0, counted
    finally:
        for part in parts:
            part.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--consumer", action="append", default=[], metavar="KEY=VALUE",
                        help="a librdkafka consumer setting over the source's own (repeatable)")  # fmt: skip
    args = parser.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.consumer)
    tune_gc()  # as the dataflow process does
    topics, _, _, _, _ = prefill(args.events, 4, 200_000.0)
    settings = topics.settings()
    task = PipelineSettings.model_validate(yaml.safe_load((PEERS_DIR / "pipeline-task.yaml").read_text()))
    validator = Validator(task.events)
    total = args.events + 4  # prefill marks each partition's end with an event of a type outside the contract
    stages: dict[str, tuple[Callable[[RecordBatch], int], int]] = {  # what each counts, and how many it must
        "read (consume and the batch's columns)": (len, total),
        "read and parse (msgspec decode and the contract's checks)": (
            lambda b: len(validator.parse_batch(b.values, b.timestamps)[0]),
            args.events,  # the valid events
        ),
    }
    figures: dict[str, list[tuple[float, float]]] = {name: [] for name in stages}
    for run in range(1, args.runs + 1):
        for name, (work, want) in stages.items():
            source = KafkaBatchSource(settings.kafka.bootstrap, topics.raw)
            source.config.update(overrides)
            cpu, wall, counted = read_all(source, total, work)
            assert counted == want, f"{name}: {counted:,} events counted, not {want:,}"
            figures[name].append((total / cpu, total / wall))
            print(f"run {run}, {name}: {total / cpu:,.0f} events per CPU s, {total / wall:,.0f} events/s")
    print(machine())
    for name, runs in figures.items():
        per_cpu = median([r[0] for r in runs])
        print(f"median {name}: {per_cpu:,.0f} events per CPU s ({1e6 / per_cpu:.2f} CPU s per million), "
              f"{median([r[1] for r in runs]):,.0f} events/s; two processes on two cores at most "
              f"{2 * per_cpu:,.0f} events/s with nothing else to do")  # fmt: skip


if __name__ == "__main__":
    main()
