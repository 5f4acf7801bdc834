"""Generator throughput: events/s produced to the real Kafka (every delivery acknowledged), and generation alone.

.venv/bin/python -m bench.generator [--events 1000000] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

from bench.common import Topics, machine, median
from livedash.generator import GeneratorOptions, generate, run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    topics = Topics()
    settings = topics.create()
    alone, kafka = [], []
    for i in range(args.runs):
        t0 = time.perf_counter()
        n = sum(len(c.values) for c in generate(args.events, int(time.time() * 1000), GeneratorOptions(seed=i)))
        alone.append(n / (time.perf_counter() - t0))
        summary = run(settings.kafka.bootstrap, topics.raw, args.events, None, 0, GeneratorOptions(seed=i),
                      progress=False)  # fmt: skip
        kafka.append(summary.rate)
        print(f"run {i + 1}: generate only {alone[-1]:,.0f} events/s; to Kafka {kafka[-1]:,.0f} events/s")
    print(f"machine: {machine()}")
    print(f"median of {args.runs} runs of {args.events:,} events: generate only {median(alone):,.0f} events/s, "
          f"produced to Kafka (acks=all, idempotent) {median(kafka):,.0f} events/s")  # fmt: skip


if __name__ == "__main__":
    main()
