"""Output volume of the windowing: rows and bytes per second a partition publishes, by roll-up. No servers.

    .venv/bin/python -m bench.output [--rate 250] [--events 60000]

Feeds one partition's PartitionWindows with generated events (event time advancing `--rate` events per
second) and publishes once per second of event time, as the dataflow does live. Two policies for sliding
windows: "current" (the dataflow's: a window is published once it ends within one slide of the watermark)
and "all" (every window an event falls in, every second; what the first version did).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import orjson

from livedash import config
from livedash.generator import GeneratorOptions, generate
from livedash.pipeline.contract import Validator
from livedash.pipeline.windows import PartitionWindows


class Late:
    """Late corrections: events, rows published, and per key the newest row (what Pinot's upsert keeps)."""

    def __init__(self) -> None:
        self.events = 0
        self.published = 0
        self.kept: dict[str, tuple[int, int]] = {}  # pk -> (version, event_count)

    def see(self, row: dict[str, Any]) -> None:
        self.published += 1
        if row["version"] >= self.kept.get(row["pk"], (-1, 0))[0]:
            self.kept[row["pk"]] = (row["version"], row["event_count"])

    @property
    def per_event_and_window(self) -> int:
        """The rows one correction per late event and closed window made (the design before blocks)."""
        return sum(n for _, n in self.kept.values())


def measure(events: list, offsets: list[int], flush: bool) -> tuple[Counter, Counter, int, Late]:  # type: ignore[type-arg]
    windows = PartitionWindows(config.load().pipeline, 0)
    rows: Counter[str] = Counter()
    size: Counter[str] = Counter()
    late = Late()
    publishes, i, t = 0, 0, events[0].ts
    while i < len(events):
        t += 1000
        j = i
        while j < len(events) and events[j].ts < t:
            j += 1
        late.events += len(windows.add_batch(events[i:j], offsets[i:j]))
        i = j
        windows.now_ms = t  # the wall clock follows event time here: the tiers' publish intervals apply
        for row in windows.publish(flush):
            value = orjson.loads(row.value)
            name = value["rollup_name"]
            rows[name] += 1
            size[name] += len(row.value)
            if value["kind"] == "late":
                late.see(value)
        publishes += 1
    return rows, size, publishes, late


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
    figures: dict[str, Any] = {"events": len(events), "rate": args.rate}
    for policy, flush in (("current", False), ("all", True)):
        rows, size, n, late = measure(events, offsets, flush)
        per = ", ".join(f"{k} {rows[k] / n:.1f} rows {size[k] / n / 1000:.0f} KB" for k in sorted(rows))
        print(f"{policy}: per second {sum(rows.values()) / n:.1f} rows, {sum(size.values()) / n / 1000:.0f} KB ({per})")
        print(f"  late corrections: {late.events:,} late events; {late.published:,} rows published, "
              f"{len(late.kept):,} kept (one per block, window and group); one per late event and window would "
              f"be {late.per_event_and_window:,}")  # fmt: skip
        figures[policy] = {"rows_per_s": round(sum(rows.values()) / n, 1), "late_events": late.events,
                           "late_rows_published": late.published, "late_rows_kept": len(late.kept),
                           "late_rows_one_per_event_and_window": late.per_event_and_window}  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
