"""Output volume of the windowing: rows and bytes per second a partition publishes, by roll-up. No servers.

    .venv/bin/python -m bench.output [--rate 250] [--events 60000]

Feeds one partition's PartitionWindows with generated events (event time advancing `--rate` events per
second) and publishes once per second of event time, as the dataflow does live. Two policies for sliding
windows: "current" (the dataflow's: a window is published once it ends within one slide of the watermark)
and "all" (every window an event falls in, every second; what the first version did).
"""

from __future__ import annotations

import argparse
from collections import Counter

import orjson

from livedash import config
from livedash.generator import GeneratorOptions, generate
from livedash.pipeline.contract import Validator
from livedash.pipeline.windows import PartitionWindows


def measure(events: list, offsets: list[int], flush: bool) -> tuple[Counter, Counter, int]:  # type: ignore[type-arg]
    windows = PartitionWindows(config.load().pipeline, 0)
    rows: Counter[str] = Counter()
    size: Counter[str] = Counter()
    publishes, i, t = 0, 0, events[0].ts
    while i < len(events):
        t += 1000
        j = i
        while j < len(events) and events[j].ts < t:
            j += 1
        windows.add_batch(events[i:j], offsets[i:j])
        i = j
        windows.now_ms = t  # the wall clock follows event time here: the tiers' publish intervals apply
        for row in windows.publish(flush):
            name = orjson.loads(row.value)["rollup_name"]
            rows[name] += 1
            size[name] += len(row.value)
        publishes += 1
    return rows, size, publishes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=250.0, help="events per second of event time")
    parser.add_argument("--events", type=int, default=60_000)
    args = parser.parse_args()
    settings = config.load().pipeline
    validator = Validator(settings.events)
    start = 1_800_000_000_000
    events = []
    for chunk in generate(args.events, start, GeneratorOptions(seed=3, nominal_rate=args.rate)):
        events += [e for e in (validator.parse(v, start + 600_000) for v in chunk.values) if not isinstance(e, str)]
    offsets = list(range(len(events)))
    for policy, flush in (("current", False), ("all", True)):
        rows, size, n = measure(events, offsets, flush)
        per = ", ".join(f"{k} {rows[k] / n:.1f} rows {size[k] / n / 1000:.0f} KB" for k in sorted(rows))
        print(f"{policy}: per second {sum(rows.values()) / n:.1f} rows, {sum(size.values()) / n / 1000:.0f} KB ({per})")


if __name__ == "__main__":
    main()
