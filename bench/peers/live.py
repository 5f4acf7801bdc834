"""Freshness at a fixed input rate, for every peer of bench.peers (issue 6).

Each peer gets a fresh topic and runs unbounded while the generator writes events live (event time = the wall
clock, out of order by up to 5 s, no late or malformed events) at a fixed nominal rate. A watcher reads the
peer's output from the start and, every 100 ms, samples the age of the newest event time its output reflects;
the samples of the first `warm_s` seconds are dropped (JVM start, first fetches). p50, p95 and p99 of the rest.

What "reflects" means per peer:
- ours: a row's `last_event_ts` (the newest event folded into it). Every open window is published each second
  (provisional), so the output follows the input closely, and a final row comes after the allowed lateness.
- Quix Streams (`.final()`) and Flink SQL (TUMBLE): a window's end, once the window has been emitted. Both emit
  a window only when it closes: event time past its end plus the grace (Quix) or the watermark's delay
  (Flink), both set to the input's out-of-orderness. Their age therefore saws between that delay and the
  delay plus the window size.
- Pinot's ingestion aggregation: the query result's `minConsumingFreshnessTimeMs` (the newest message its
  consuming segments hold), polled every 100 ms; there is no output topic.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import BENCH_DIR, Topics, halt, pct, start_dataflows, stop
from bench.peers import EOF_TYPE, WINDOW_MS, pinot_baseline
from livedash.generator import GeneratorOptions, run

OUT_OF_ORDER_MS = 5_000  # the generator's out-of-order events are at most 5 s behind


@dataclass
class Freshness:
    peer: str
    p50_s: float
    p95_s: float
    p99_s: float
    samples: int
    input_per_s: float


def produce(bootstrap: str, topic: str, rate: float, duration_s: float, out: dict[str, float]) -> None:
    opts = GeneratorOptions(seed=8, late_fraction=0.0, malformed_fraction=0.0)
    summary = run(bootstrap, topic, None, duration_s, rate, opts, progress=False)
    out["rate"] = summary.sent / summary.seconds


def sample_output(
    bootstrap: str, topic: str, reflects: Callable[[dict[str, Any]], int | None], warm_s: float, until: float
) -> list[float]:
    """Ages (s) of the newest event time the output reflects, every 100 ms after `warm_s`, until `until`."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"fresh-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "topic.metadata.refresh.interval.ms": 1000})  # fmt: skip
    consumer.subscribe([topic])
    start, newest, ages = time.time(), 0, []
    next_at = start + warm_s
    try:
        while time.time() < until:
            for msg in consumer.consume(10_000, timeout=0.02):
                if msg.error() is None and msg.value() is not None:
                    ts = reflects(orjson.loads(msg.value()))
                    if ts is not None and ts > newest:
                        newest = ts
            now = time.time()
            if now >= next_at:
                next_at += 0.1
                if newest:
                    ages.append(now - newest / 1000)
    finally:
        consumer.close()
    return ages


def window_end(row: dict[str, Any]) -> int | None:
    if row.get("type") == EOF_TYPE or row.get("window_start") is None:
        return None
    return int(row["window_start"]) + WINDOW_MS


def measure(
    peer: str, start_peer: Callable[[Topics], Callable[[], None]], out_topic: Callable[[Topics], str],
    reflects: Callable[[dict[str, Any]], int | None], rate: float, duration_s: float, warm_s: float,
) -> Freshness:  # fmt: skip
    topics = Topics(partitions=4)
    settings = topics.create()
    bootstrap = settings.kafka.bootstrap
    stop_peer = start_peer(topics)
    made: dict[str, float] = {}
    try:
        producer = threading.Thread(target=produce, args=(bootstrap, topics.raw, rate, duration_s, made))
        producer.start()
        ages = sample_output(bootstrap, out_topic(topics), reflects, warm_s, time.time() + duration_s)
        producer.join()
    finally:
        stop_peer()
    if not ages:
        raise RuntimeError(f"{peer}: no output within {duration_s:.0f}s")
    return Freshness(peer, pct(ages, 0.5), pct(ages, 0.95), pct(ages, 0.99), len(ages),
                     made.get("rate", 0.0))  # fmt: skip


def ours(rate: float, duration_s: float, warm_s: float, pipeline_file: str | None, rollup: str) -> Freshness:
    def start(topics: Topics) -> Callable[[], None]:
        env = topics.env()
        if pipeline_file is not None:
            env["LIVEDASH_PIPELINE_FILE"] = pipeline_file
        procs = start_dataflows(env, 1, "fresh-ours")
        return lambda: stop(procs)

    def reflects(row: dict[str, Any]) -> int | None:
        return int(row["last_event_ts"]) if row.get("rollup_name") == rollup else None

    return measure("livedash, 1 process", start, lambda t: t.agg, reflects, rate, duration_s, warm_s)


def _process(cmd: list[str], env: dict[str, str], log: Path) -> Callable[[], None]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)

    return lambda: halt(proc)


def quix(python: Path, app: Path, rate: float, duration_s: float, warm_s: float) -> Freshness:
    work = BENCH_DIR / "fresh-quix"
    work.mkdir(parents=True, exist_ok=True)

    def start(topics: Topics) -> Callable[[], None]:
        env = {**os.environ, "BROKER": topics.settings().kafka.bootstrap, "IN_TOPIC": topics.raw,
               "OUT_TOPIC": f"fresh_quix_{topics.suffix}", "GROUP": f"fresh-quix-{topics.suffix}",
               "STATE_DIR": str(work / f"state-{topics.suffix}"), "GRACE_MS": str(OUT_OF_ORDER_MS),
               "READY_FILE": str(work / "ready"), "DRAINED_FILE": str(work / "drained"),
               "LAST_OFFSETS": "0:-1"}  # fmt: skip
        return _process([str(python), str(app)], env, work / "quix.log")

    return measure("Quix Streams 3.28.1", start, lambda t: f"fresh_quix_{t.suffix}", window_end, rate, duration_s,
                   warm_s)  # fmt: skip


def flink(python: Path, job: Path, jar: Path, rate: float, duration_s: float, warm_s: float,
          create: Callable[[str, dict[str, int]], None]) -> Freshness:  # fmt: skip
    work = BENCH_DIR / "fresh-flink"
    work.mkdir(parents=True, exist_ok=True)

    def start(topics: Topics) -> Callable[[], None]:
        bootstrap = topics.settings().kafka.bootstrap
        create(bootstrap, {f"fresh_flink_{topics.suffix}": topics.partitions})
        env = {**os.environ, "BROKER": bootstrap, "IN_TOPIC": topics.raw, "OUT_TOPIC": f"fresh_flink_{topics.suffix}",
               "GROUP": f"fresh-flink-{topics.suffix}", "JAR": str(jar), "PARALLELISM": "1", "MODE": "live",
               "OUT_OF_ORDER_MS": str(OUT_OF_ORDER_MS)}  # fmt: skip
        return _process([str(python), str(job)], env, work / "flink.log")

    return measure("Flink SQL 2.2.1, parallelism 1", start, lambda t: f"fresh_flink_{t.suffix}", window_end, rate,
                   duration_s, warm_s)  # fmt: skip


def pinot(rate: float, duration_s: float, warm_s: float) -> Freshness:
    from livedash.pinot.client import PinotError

    topics = Topics(partitions=4)
    settings = topics.create()
    name = f"fresh_pinot_{topics.suffix}"
    client = pinot_baseline.create(settings, name, topics.raw)
    made: dict[str, float] = {}
    ages: list[float] = []
    try:
        producer = threading.Thread(target=produce, args=(settings.kafka.bootstrap, topics.raw, rate, duration_s,
                                                          made))  # fmt: skip
        producer.start()
        start = time.time()
        while time.time() < start + duration_s:
            time.sleep(0.1)
            try:
                fresh = client.query(f"SELECT SUM(cnt) FROM {name}").freshness_ms
            except PinotError:
                continue
            if fresh is not None and time.time() >= start + warm_s:
                ages.append(time.time() - fresh / 1000)
        producer.join()
    finally:
        pinot_baseline.drop(settings, name)
    if not ages:
        raise RuntimeError("pinot: no freshness reported")
    return Freshness("Pinot 0.11 ingestion aggregation", pct(ages, 0.5), pct(ages, 0.95), pct(ages, 0.99), len(ages),
                     made.get("rate", 0.0))  # fmt: skip
