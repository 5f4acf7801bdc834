"""Dataflow throughput from a pre-filled topic: one process and two processes (Bytewax cluster), same data.

    .venv/bin/python -m bench.dataflow [--events 300000] [--runs 3] [--event-rate 200000]
        [--pipeline FILE] [--variants shipped,bare]

Counts events folded in (livedash_events_in metric) from the first one to the last; start-up excluded.

--event-rate is the traffic the pre-filled topic records (events per second of event time). The dataflow's
output work (rows of open and closing windows) grows with event time, not with events, so a backlog recorded
at 20,000 events/s but drained at 100,000 events/s makes it publish five times the rows a live stream at
100,000 events/s would. The default matches the rate we aim at.

--pipeline: the pipeline file (default: the config's, config/pipeline.yaml; bench/peers/pipeline-task.yaml is
the peers' one-roll-up task). --variants: `shipped` drops duplicates (the default 600 s horizon) and publishes
the valid events to their topic, as the product ships; `bare` does neither (dedup horizon 0, no valid topic),
whatever the file says; one run measures what the two cost, each variant alternating with the other on the
same data.
"""

from __future__ import annotations

import argparse
import json
import os

from bench.common import Topics, machine, measure_intake, median, start_dataflows, stop
from livedash.generator import GeneratorOptions, run


def variants(topics: Topics) -> dict[str, dict[str, str]]:
    return {
        "shipped": {"LIVEDASH_PIPELINE__DEDUP__HORIZON_S": "600", "LIVEDASH_PIPELINE__TOPICS__VALID": topics.valid},
        "bare": {"LIVEDASH_PIPELINE__DEDUP__HORIZON_S": "0", "LIVEDASH_PIPELINE__TOPICS__VALID": "null"},
    }


def measure(env: dict[str, str], processes: int, events: int, label: str) -> tuple[float, float]:
    procs = start_dataflows(env, processes, label)
    try:
        rate, cpu, _ = measure_intake(procs, events, 900, 0.5)
        return rate, cpu
    finally:
        stop(procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--event-rate", type=float, default=200_000.0)
    parser.add_argument("--pipeline", help="pipeline file (default: the config's)")
    parser.add_argument("--variants", default="shipped", help="comma-separated: shipped, bare")
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    chosen = args.variants.split(",")
    processes_list = [int(p) for p in args.processes.split(",")]
    topics = Topics(partitions=4)
    settings = topics.create()
    opts = GeneratorOptions(seed=5, nominal_rate=args.event_rate)
    summary = run(settings.kafka.bootstrap, topics.raw, args.events, None, 0, opts, progress=False)
    print(f"pre-filled {topics.raw}: {summary.sent:,} events ({summary.malformed:,} malformed), 4 partitions, "
          f"recorded at {args.event_rate:,.0f} events/s of event time")  # fmt: skip
    base_env = topics.env()
    if args.pipeline:
        base_env["LIVEDASH_PIPELINE_FILE"] = os.path.relpath(os.path.abspath(args.pipeline),
                                                             settings.config_file.parent if settings.config_file
                                                             else ".")  # fmt: skip
    results: dict[tuple[str, int], list[tuple[float, float]]] = {(v, p): [] for v in chosen for p in processes_list}
    for i in range(args.runs):
        for processes in processes_list:
            for variant in chosen:
                # Fresh output topics per run would be cleaner; the rows are idempotent upserts, so reuse is
                # harmless, and the valid events of each run go to the same topic (appended: only counted here).
                env = {**base_env, **variants(topics)[variant]}
                rate, cpu = measure(env, processes, args.events, f"dataflow-{variant}-{processes}p-{i}")
                results[(variant, processes)].append((rate, cpu))
                print(f"run {i + 1}, {variant}, {processes} process(es): {rate:,.0f} events/s, "
                      f"{cpu:.2f} CPU s per million events")  # fmt: skip
    print(f"machine: {machine()}")
    figures = {}
    for (variant, processes), rows in results.items():
        rate, cpu = median([r for r, _ in rows]), median([c for _, c in rows])
        figures[f"{variant}_{processes}p"] = {"events_per_s": round(rate), "cpu_s_per_million": round(cpu, 2)}
        print(f"median {variant}, {processes} process(es): {rate:,.0f} events/s, {cpu:.2f} CPU s per million")
    if "shipped" in chosen and "bare" in chosen:
        for processes in processes_list:
            ratio = figures[f"bare_{processes}p"]["events_per_s"] / figures[f"shipped_{processes}p"]["events_per_s"]
            print(f"{processes} process(es): bare / shipped = {ratio:.2f} (events/s)")
    if 1 in processes_list and 2 in processes_list:
        for variant in chosen:
            two, one = figures[f"{variant}_2p"]["events_per_s"], figures[f"{variant}_1p"]["events_per_s"]
            print(f"{variant}: ratio two/one processes: {two / one:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
