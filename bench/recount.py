"""`livedash verify`'s recount without Kafka or Pinot: raw messages per second fed to Recount, one process.

Generates the messages the kill -9 fault test sends (50,000 users, 1% late, 1% malformed; 4 partitions in
turn), feeds them to verify's Recount for the shipped pipeline (or --pipeline's roll-ups) and asks for
every roll-up's expected groups, as verify does before it compares. Prints messages per second of the feed
and the seconds of the expected groups, medians over --runs.

.venv/bin/python -m bench.recount [--events 200000] [--runs 3] [--pipeline config/pipeline.yaml]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from bench.common import machine, median
from livedash.generator import GeneratorOptions, generate
from livedash.pipeline.settings import PipelineSettings
from livedash.verify.recount import Recount

START_MS = 1_795_960_800_000  # fixed: the generator's daily rhythm, and so the windows, depend on the time of day


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pipeline", default="config/pipeline.yaml")
    args = parser.parse_args()
    settings = PipelineSettings.model_validate(yaml.safe_load(Path(args.pipeline).read_text()))
    opts = GeneratorOptions(seed=5, users=50_000, late_fraction=0.01, malformed_fraction=0.01, run_id="bench")
    chunks = list(generate(args.events, START_MS, opts))
    messages = [kv for chunk in chunks for kv in zip(chunk.keys, chunk.values, strict=True)]
    feed_rates, expect_s = [], []
    for run in range(args.runs):
        recount = Recount(settings)
        t0 = time.perf_counter()
        for i, (key, value) in enumerate(messages):
            recount.feed(i % 4, key, value, START_MS)
        t1 = time.perf_counter()
        groups = sum(len(recount.expected(r, 0, 2**62, {})) for r in settings.rollups)
        t2 = time.perf_counter()
        feed_rates.append(len(messages) / (t1 - t0))
        expect_s.append(t2 - t1)
        print(f"run {run + 1}: {feed_rates[-1]:,.0f} messages/s fed, {groups:,} groups expected in {t2 - t1:.2f} s")
    per_million_s = 1e6 / median(feed_rates) + median(expect_s) * 1e6 / args.events
    figures = {"bench": "recount", "events": args.events, "runs": args.runs, "machine": machine(),
               "messages_per_s_median": round(median(feed_rates)), "expected_s_median": round(median(expect_s), 2),
               "recount_s_per_million": round(per_million_s, 1)}  # fmt: skip
    print(f"median: {figures['messages_per_s_median']:,} messages/s; expected groups {figures['expected_s_median']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
