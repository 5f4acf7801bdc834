"""The duplicate filter alone (livedash.pipeline.dedup.Dedup, one source partition): --minutes of event time at
--event-rate, UUID event ids, one event in --every-nth a copy of one up to 5 minutes back, fed in batches of
--batch. Prints the filter's CPU per event, the resident memory it holds (after a full collection and
malloc_trim, the events' own strings freed: only the filter keeps ids), and what one snapshot of it costs to
pickle and takes; the last line is one JSON object.

.venv/bin/python -m bench.dedup [--minutes 15] [--event-rate 2000] [--batch 100] [--module PATH]

--module: take Dedup from another copy of dedup.py, to compare with an earlier commit:
    git show REV:livedash/pipeline/dedup.py > /tmp/dedup_rev.py
    .venv/bin/python -m bench.dedup --module /tmp/dedup_rev.py
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib.util
import json
import pickle
import random
import time
import uuid
from typing import Any

import msgspec
import psutil

from bench.common import machine
from livedash.pipeline import dedup as shipped

BASE_MS = 1_800_000_000_000


class Ev(msgspec.Struct):
    event_id: str
    ts: int


def dedup_module(path: str | None) -> Any:
    if path is None:
        return shipped
    spec = importlib.util.spec_from_file_location("dedup_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="event time to run for")
    parser.add_argument("--event-rate", type=int, default=2000, help="events per second of event time")
    parser.add_argument("--batch", type=int, default=100, help="events per filter() call")
    parser.add_argument("--every-nth", type=int, default=100, help="one event in this many is a duplicate")
    parser.add_argument("--module", help="a dedup.py to take Dedup from (default: the shipped one)")
    args = parser.parse_args()
    module = dedup_module(args.module)
    rate, n = args.event_rate, int(args.event_rate * 60 * args.minutes)
    pick = random.Random(1)

    def ident(i: int) -> str:  # the same id for the same i, built again when a copy is sent
        return str(uuid.UUID(int=random.Random(i).getrandbits(128)))

    def batch(a: int, b: int) -> list[Ev]:
        out = []
        for i in range(a, b):
            j = i - pick.randrange(1, rate * 300) if i % args.every_nth == 0 and i > rate * 300 else i
            out.append(Ev(ident(j), BASE_MS + i * 1000 // rate))
        return out

    trim = ctypes.CDLL("libc.so.6").malloc_trim
    proc = psutil.Process()
    gc.collect()
    trim(0)
    rss_before = proc.memory_info().rss
    dedup = module.Dedup(600, 1_000_000)
    cpu, watermark, dropped = 0.0, None, 0
    for a in range(0, n, args.batch):
        events = batch(a, min(n, a + args.batch))
        t0 = time.process_time()
        kept, _, d = dedup.filter(events, range(a, a + len(events)), watermark)
        cpu += time.process_time() - t0
        dropped += d
        if kept:
            top = max(e.ts for e in kept)
            watermark = top if watermark is None else max(watermark, top)
    del events, kept
    gc.collect()
    trim(0)
    held_mb = (proc.memory_info().rss - rss_before) / 1e6
    t0 = time.process_time()
    blob = pickle.dumps(dedup.snapshot())
    pickle_ms = (time.process_time() - t0) * 1000
    ids = dedup.remembered if hasattr(dedup, "remembered") else len(dedup.seen)
    print(f"{args.module or 'livedash/pipeline/dedup.py'}: {n:,} events in batches of {args.batch}, {dropped:,} "
          f"duplicates dropped, {ids:,} ids remembered")  # fmt: skip
    print(f"  filter: {cpu / n * 1e6:.2f} us CPU an event; resident memory held {held_mb:,.0f} MB "
          f"({held_mb * 1e6 / max(ids, 1):.0f} bytes an id); a snapshot {len(blob) / 1e6:.1f} MB, pickled in "
          f"{pickle_ms:.0f} ms")  # fmt: skip
    print(f"machine: {machine()}")
    print(json.dumps({"events": n, "batch": args.batch, "dropped": dropped, "ids": ids,
                      "us_per_event": round(cpu / n * 1e6, 3), "held_mb": round(held_mb, 1),
                      "snapshot_mb": round(len(blob) / 1e6, 2), "pickle_ms": round(pickle_ms, 1)}))  # fmt: skip


if __name__ == "__main__":
    main()
