"""Freshness: time from an event's creation to its visibility in a Pinot query, at a steady input rate.

    bin/livedash up --apply --dataflow            # the dev stack with its dataflow
    .venv/bin/python -m bench.latency [--rate 2000] [--seconds 60]   # --rate: events per second now (not the peak)

The generator stamps each event with its creation time (ts) and sends it within 0.1 s. A probe queries the
aggregates table every 250 ms for the newest event time folded into any row; now minus that is the age of
the freshest visible event, i.e. the end-to-end delay through Kafka, the dataflow (which publishes open
windows every second), Kafka again and Pinot's consumer.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import numpy as np

from bench.common import machine
from livedash import config
from livedash.generator import GeneratorOptions, Summary, rhythm, run
from livedash.pinot.client import PinotClient, PinotError


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    settings = config.load()
    pinot = PinotClient(settings.pinot.broker_url, timeout_s=5.0, slack_s=0.0)
    # The generator's rate is its daily peak (it follows a daily rhythm): ask for the peak that gives --rate now
    peak = args.rate / rhythm(time.time())
    sent: list[Summary] = []
    opts = GeneratorOptions(seed=int(time.time()), late_fraction=0, out_of_order_fraction=0, malformed_fraction=0)
    gen = threading.Thread(target=lambda: sent.append(run(settings.kafka.bootstrap, settings.pipeline.topics.raw,
                                                          None, args.seconds, peak, opts, progress=False)))  # fmt: skip
    gen.start()
    time.sleep(5)  # warm-up: the first windows open
    lags = []
    while gen.is_alive():
        since = int(time.time() * 1000) - 120_000
        sql = (f"SELECT MAX(last_event_ts) FROM {settings.pipeline.topics.live} WHERE rollup_name = 'geo_10s' AND "
               f"window_start >= {since}")  # fmt: skip
        try:
            rows = pinot.query(sql).rows
        except PinotError as exc:
            if not exc.query_exception:
                raise
            rows = ()  # Pinot reported an exception (the table still starting): no probe this time
        now = time.time() * 1000
        newest = float(rows[0][0]) if rows else float("-inf")  # MAX over no rows is "-Infinity"
        if newest > since:
            lags.append((now - newest) / 1000)
        time.sleep(0.25)
    gen.join()
    p50, p95, p99 = np.percentile(lags, [50, 95, 99])
    rate = sent[0].rate if sent else float("nan")
    print(f"machine: {machine()}")
    print(f"{len(lags)} probes over {args.seconds:.0f}s at {rate:,.0f} events/s sent (asked {args.rate:,.0f}): "
          f"event creation -> visible in Pinot: p50 {p50:.2f}s, p95 {p95:.2f}s, p99 {p99:.2f}s, "
          f"max {max(lags):.2f}s")  # fmt: skip
    figures = {"rate_sent": round(rate), "probes": len(lags), "p50_s": float(p50), "p95_s": float(p95),
               "p99_s": float(p99), "max_s": max(lags)}  # fmt: skip
    print(json.dumps({k: round(v, 3) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
