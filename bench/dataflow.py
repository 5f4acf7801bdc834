"""Dataflow throughput from a pre-filled topic: one process and two processes (Bytewax cluster), same data.

    .venv/bin/python -m bench.dataflow [--events 300000] [--runs 3] [--event-rate 200000]

Counts events folded in (livedash_events_in metric) from the first one to the last; start-up excluded.

--event-rate is the traffic the pre-filled topic records (events per second of event time). The dataflow's
output work (rows of open and closing windows) grows with event time, not with events, so a backlog recorded
at 20,000 events/s but drained at 100,000 events/s makes it publish five times the rows a live stream at
100,000 events/s would. The default matches the rate we aim at.
"""

from __future__ import annotations

import argparse

from bench.common import Topics, machine, measure_intake, median, start_dataflows, stop
from livedash.generator import GeneratorOptions, run


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
    args = parser.parse_args()
    topics = Topics(partitions=4)
    settings = topics.create()
    opts = GeneratorOptions(seed=5, nominal_rate=args.event_rate)
    summary = run(settings.kafka.bootstrap, topics.raw, args.events, None, 0, opts, progress=False)
    print(f"pre-filled {topics.raw}: {summary.sent:,} events ({summary.malformed:,} malformed), 4 partitions, "
          f"recorded at {args.event_rate:,.0f} events/s of event time")  # fmt: skip
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for i in range(args.runs):
        for processes in (1, 2):
            # Fresh output topics per run would be cleaner; the rows are idempotent upserts, so reuse is harmless.
            rate, cpu = measure(topics.env(), processes, args.events, f"dataflow-{processes}p-{i}")
            results[processes].append((rate, cpu))
            print(f"run {i + 1}, {processes} process(es): {rate:,.0f} events/s, {cpu:.1f} CPU s per million events")
    print(f"machine: {machine()}")
    for processes, rows in results.items():
        print(f"median {processes} process(es): {median([r for r, _ in rows]):,.0f} events/s, "
              f"{median([c for _, c in rows]):.1f} CPU s per million events")  # fmt: skip
    one, two = median([r for r, _ in results[1]]), median([r for r, _ in results[2]])
    print(f"ratio two/one processes: {two / one:.2f}")


if __name__ == "__main__":
    main()
