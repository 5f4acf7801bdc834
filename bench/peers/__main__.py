"""Side by side with peer stream processors on the same pre-filled topic (issue 6): our dataflow (1 and 2
processes), Quix Streams, Flink SQL through PyFlink (parallelism 1 and 2), and Pinot's ingestion-time
aggregation as a baseline (docs/peers.md, docs/benchmarks.md).

    .venv/bin/python -m bench.peers [--events 1000000] [--partitions 4] [--runs 3] [--event-rate 200000]
        [--peers ours,quix,flink,pinot] [--ours task|shipped] [--freshness-rate 5000] [--chart docs/peers.png]

The task: 10 s event-time tumbling windows per (type, country) with count, and sum, min and max of latency_ms,
results to a Kafka topic. Our dataflow runs it as a pipeline of its own (--ours task: bench/peers/
pipeline-task.yaml) or as it ships (--ours shipped: the geo_10s roll-up answers the task once merged); either way
with its sketches. Each run pre-fills a fresh topic (same seed) and computes the expected windows from the events
sent, independently of every peer. The rate is input events over the time from the first to the last one read
(our events-in metric; Quix's on_message_processed; Flink's and Pinot's as docs/peers.md says); then each peer's
output is checked window by window. Quix Streams and PyFlink run in their own virtual environments under
.livedash/peers/, created on first use from bench/peers/requirements-*.txt.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    BENCH_DIR,
    Topics,
    cpu_seconds,
    halt,
    machine,
    measure_intake,
    median,
    peak_rss_mb,
    start_dataflows,
    status_kb,
    stop,
)
from bench.peers import EOF_TYPE, WINDOW_MS, live, pinot_baseline
from livedash.config import PROJECT_ROOT, Settings
from livedash.generator import GeneratorOptions, run
from livedash.kafka import admin
from livedash.pinot.client import PinotError
from livedash.wait import poll

HERE = Path(__file__).resolve().parent
PEERS_DIR = PROJECT_ROOT / ".livedash" / "peers"
OUT_OF_ORDER_MS = 10_000  # covers the generator's out-of-order events (at most 5 s behind); no late events are sent

Key = tuple[int, str, str | None]  # window start, type, country


@dataclass
class Agg:
    count: int = 0
    sum: float = 0.0  # Quix sums a window with no value to 0 (Flink: NULL); compared as 0
    min: float | None = None
    max: float | None = None

    def add(self, value: float | None) -> None:
        self.count += 1
        if value is None:
            return
        self.sum += value
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)


def venv_python(name: str) -> Path:
    """The peer's own interpreter: .livedash/peers/<name>, created from requirements-<name>.txt once."""
    home = PEERS_DIR / name
    python = home / "bin" / "python"
    stamp = home / ".installed"
    requirements = HERE / f"requirements-{name}.txt"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-r", str(requirements)], check=True)
        stamp.write_text(requirements.read_text())
    return python


def prefill(events: int, partitions: int, event_rate: float) -> tuple[Topics, Path, int, int, str]:
    """The input topic, the valid events sent (JSON lines), the grace every peer needs (ms), the newest event
    time, and each partition's last offset ("partition:offset,...").

    Quix Streams closes a window by the newest event time its (repartitioned) partition has seen, not by the
    oldest over the input partitions as Flink's watermarks do. Reading a backlog one input partition at a time,
    it would find most events late (a first try with 10 s of grace dropped 14,975 of 20,000). So the grace
    covers the input's whole event-time span: every peer holds its windows until the input is read, and every
    peer must then be exact."""
    topics = Topics(partitions=partitions)
    settings = topics.create()
    truth = BENCH_DIR / f"peers-truth-{topics.suffix}.jsonl"
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    # Valid events only: the peers have no event contract, and would count a malformed event that still parses
    # (a first try with 1% malformed: Quix counted 12 more events than were valid in one window)
    opts = GeneratorOptions(seed=6, nominal_rate=event_rate, late_fraction=0.0, malformed_fraction=0.0)
    summary = run(settings.kafka.bootstrap, topics.raw, events, None, 0, opts, truth=truth, progress=False)
    times = [orjson.loads(line)["ts"] for line in truth.open("rb")]
    grace = max(times) - min(times) + OUT_OF_ORDER_MS
    last = mark_ends(settings.kafka.bootstrap, topics.raw, max(times), partitions)
    print(f"pre-filled {topics.raw}: {summary.sent:,} events ({summary.malformed:,} malformed), {partitions} "
          f"partitions, event time at {event_rate:,.0f}/s")  # fmt: skip
    return topics, truth, grace, max(times), last


def mark_ends(bootstrap: str, topic: str, newest: int, partitions: int) -> str:
    """A valid event of the ignored type at the end of each partition (closing nothing: its time is the newest):
    "partition:offset,..." of these, so a peer can tell when it has read everything."""
    from confluent_kafka import Producer

    offsets: dict[int, int] = {}

    def delivered(err: object, msg: object) -> None:
        assert err is None, err
        offsets[msg.partition()] = msg.offset()  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in range(partitions):
        event = {"event_id": f"end-{partition}", "ts": newest, "type": EOF_TYPE, "user_id": "eof", "country": "end"}
        producer.produce(topic, orjson.dumps(event), partition=partition, on_delivery=delivered)
    assert producer.flush(30) == 0
    return ",".join(f"{p}:{o}" for p, o in sorted(offsets.items()))


def close_windows(bootstrap: str, topic: str, newest: int, grace: int, partitions: int) -> None:
    """Events of a type no peer reports, later than every window's end + grace, in every input partition and
    under many keys (so every repartitioned partition sees one): peers that close windows only on newer
    event time (Quix's .final()) then close the last ones. Sent once the peer has read every other message:
    any event it read after them would be late."""
    from confluent_kafka import Producer

    ts = newest - newest % WINDOW_MS + 2 * WINDOW_MS + grace + 1
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition in range(partitions):
        for i in range(32):
            event = {"event_id": f"eof-{partition}-{i}", "ts": ts, "type": EOF_TYPE, "user_id": "eof",
                     "country": f"k{i}"}  # fmt: skip
            producer.produce(topic, orjson.dumps(event), key=f"eof{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def expected(truth: Path) -> dict[Key, Agg]:
    """Computed here from the events sent, independently of every peer."""
    out: dict[Key, Agg] = {}
    for line in truth.open("rb"):
        e = orjson.loads(line)
        key = (e["ts"] - e["ts"] % WINDOW_MS, e["type"], e.get("country"))
        agg = out.get(key)
        if agg is None:
            agg = out[key] = Agg()
        agg.add(e.get("latency_ms"))
    return out


def watch_output(
    bootstrap: str, topic: str, want: set[Key], timeout_s: float
) -> Iterator[tuple[float, dict[Key, Agg]]]:
    """Yields (time all expected windows were seen, windows) once; raises on timeout."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    got: dict[Key, Agg] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(10_000, timeout=0.2):
                if msg.error() is not None:
                    continue
                v = orjson.loads(msg.value())
                if v["type"] == EOF_TYPE:
                    continue
                country = None if v["country"] in (None, "None") else v["country"]
                got[(int(v["window_start"]), v["type"], country)] = Agg(int(v["count"]), float(v["sum"] or 0.0),
                                                                         v["min"], v["max"])  # fmt: skip
            if want <= got.keys():
                yield time.time(), got
                return
        raise TimeoutError(f"{len(want - got.keys()):,} of {len(want):,} windows missing after {timeout_s:.0f}s")
    finally:
        consumer.close()


def differences(want: dict[Key, Agg], got: dict[Key, Agg]) -> list[str]:
    out = []
    for key, w in want.items():
        g = got.get(key)
        if g is None:
            out.append(f"{key}: missing")
        elif (
            g.count != w.count
            or not math.isclose(g.sum, w.sum, rel_tol=1e-9, abs_tol=1e-6)
            or (g.min, g.max) != (w.min, w.max)
        ):
            out.append(f"{key}: got {g}, want {w}")
    out += [f"{key}: extra {got[key]}" for key in got.keys() - want.keys()]
    return out


@dataclass
class Result:
    peer: str
    events_per_s: float
    cpu_s_per_million: float
    peak_rss_mb: float
    exact: bool
    broker_cpu_s_per_million: float | None = None  # the Kafka broker serving the reads, same interval (ours)


def run_quix(
    topics: Topics, bootstrap: str, input_: tuple[str, int, int], want: dict[Key, Agg], label: str, events: int
) -> Result:
    """input_: each partition's last offset, the newest event time, the grace."""
    last, newest, grace = input_
    python = venv_python("quix")
    work = BENCH_DIR / f"quix-{label}"
    work.mkdir(parents=True, exist_ok=True)
    ready = work / "ready"
    drained = work / "drained"
    for f in (ready, drained):
        f.unlink(missing_ok=True)
    out_topic = f"peers_quix_{topics.suffix}_{label}"
    env = {**os.environ, "BROKER": bootstrap, "IN_TOPIC": topics.raw, "OUT_TOPIC": out_topic,
           "GROUP": f"quix-{topics.suffix}-{label}", "STATE_DIR": str(work / "state"), "GRACE_MS": str(grace),
           "READY_FILE": str(ready), "DRAINED_FILE": str(drained), "LAST_OFFSETS": last}  # fmt: skip
    log = (work / "quix.log").open("wb")
    proc = subprocess.Popen([str(python), str(HERE / "quix_app.py")], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        poll(lambda: drained.exists() or proc.poll() is not None, 3600, every_s=0.05)
        assert drained.exists(), f"quix did not read the input; see {work / 'quix.log'}"
        close_windows(bootstrap, topics.raw, newest, grace, topics.partitions)
        done, got = next(watch_output(bootstrap, out_topic, set(want), timeout_s=3600))
        cpu, rss = cpu_seconds(proc.pid), peak_rss_mb(proc.pid)
        first, last_read = float(ready.read_text()), float(drained.read_text())
    finally:
        halt(proc)
    diff = differences(want, got)
    for line in diff[:5]:
        print(f"  quix differs: {line}")
    # The rate: input read from first to last, as our metric counts; the last windows close after (sentinels)
    print(f"  quix: every window out {done - last_read:.1f}s after the input was read")
    return Result("Quix Streams 3.28.1", events / (last_read - first), cpu / (events / 1e6), rss, not diff)


def create_topics(bootstrap: str, partitions: dict[str, int]) -> None:
    admin.create_topics(admin.kafka_admin(bootstrap), partitions)


FLINK_KAFKA = "org.apache.flink:flink-sql-connector-kafka:5.0.0-2.2"  # for Flink 2.2 (docs/peers.md)


def connector_jar() -> Path:
    """Flink's Kafka SQL connector from Maven Central, fetched once into .livedash/peers/jars."""
    _group, artifact, version = FLINK_KAFKA.split(":")
    jars = PEERS_DIR / "jars"
    jar = jars / f"{artifact}-{version}.jar"
    if not jar.exists():
        jars.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mvn", "-B", "-q", "dependency:copy", f"-Dartifact={FLINK_KAFKA}",
                        f"-DoutputDirectory={jars}"], check=True)  # fmt: skip
    return jar


def run_flink(
    topics: Topics, bootstrap: str, want: dict[Key, Agg], label: str, events: int, parallelism: int
) -> Result:
    """Flink SQL (PyFlink 2.2.1, its own venv): a bounded job over the topic as it stands, timed from
    submission to its end after a warm-up job in the same JVM (bench/peers/flink_job.py)."""
    python = venv_python("flink")
    work = BENCH_DIR / f"flink-{label}"
    work.mkdir(parents=True, exist_ok=True)
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    out_topic = f"peers_flink_{topics.suffix}_{label}"
    create_topics(bootstrap, {out_topic: topics.partitions, f"{out_topic}_warmup": 1})  # Flink creates none
    env = {**os.environ, "BROKER": bootstrap, "IN_TOPIC": topics.raw, "OUT_TOPIC": out_topic,
           "GROUP": f"flink-{topics.suffix}-{label}", "JAR": str(connector_jar()), "PARALLELISM": str(parallelism),
           "PARTITIONS": str(topics.partitions), "OUT_OF_ORDER_MS": str(OUT_OF_ORDER_MS),
           "RESULT_FILE": str(result_file)}  # fmt: skip
    with (work / "flink.log").open("wb") as log:
        subprocess.run([str(python), str(HERE / "flink_job.py")], env=env, stdout=log, stderr=subprocess.STDOUT,
                       timeout=3600, check=False)  # fmt: skip
    assert result_file.exists(), f"the Flink job failed; see {work / 'flink.log'}"
    run = orjson.loads(result_file.read_bytes())
    done, got = next(watch_output(bootstrap, out_topic, set(want), timeout_s=120))
    diff = differences(want, got)
    for line in diff[:5]:
        print(f"  flink ({parallelism}p) differs: {line}")
    print(f"  flink ({parallelism}p): job {run['seconds']:.1f}s, every window read back {done - run['end']:.1f}s after")
    name = f"Flink SQL 2.2.1, parallelism {parallelism}"
    return Result(name, events / run["seconds"], run["cpu_s"] / (events / 1e6), run["rss_mb"], not diff)


def pinot_pid(settings: Settings) -> int:
    return int((settings.state_dir / "run" / "pinot.pid").read_text().split()[0])


def run_pinot(topics: Topics, settings: Settings, want: dict[Key, Agg], label: str, events: int) -> Result:
    """The baseline without a stream processor: a Pinot table aggregating the topic as it ingests it. Timed
    from the table's creation until it holds every event; CPU is the Pinot process's over that time (all of
    Pinot runs in one JVM), memory its resident growth. Counts only (see pinot_table)."""
    name = f"peers_pinot_{topics.suffix}_{label}"
    pid = pinot_pid(settings)
    cpu0, rss0 = cpu_seconds(pid), status_kb(pid, "VmRSS")
    t0 = time.time()
    client = pinot_baseline.create(settings, name, topics.raw)

    def sql(text: str) -> tuple[tuple[Any, ...], ...]:
        return client.query(text).rows

    def held() -> int:
        try:
            return int(sql(f"SELECT SUM(cnt) FROM {name}")[0][0])
        except (PinotError, IndexError, TypeError, ValueError):
            return 0  # the table is still being set up

    poll(held, 3600, every_s=0.1, done=lambda n: n >= events)
    t1 = time.time()
    cpu, rss = cpu_seconds(pid) - cpu0, (status_kb(pid, "VmRSS") - rss0) / 1024
    rows = sql(f"SELECT window_start, type, country, SUM(cnt) FROM {name} GROUP BY window_start, type, country "
               f"LIMIT 1000000")  # fmt: skip
    got = {(int(w), str(t), None if c == "null" else str(c)): int(n) for w, t, c, n in rows}  # type: ignore[arg-type]
    stored = int(sql(f"SELECT COUNT(*) FROM {name}")[0][0])  # type: ignore[call-overload]
    print(f"  pinot: {stored:,} rows stored for {events:,} events (aggregated at ingestion per consuming segment)")
    counts = {k: a.count for k, a in want.items()}
    diff = [f"{k}: got {got.get(k)}, want {v}" for k, v in counts.items() if got.get(k) != v]
    diff += [f"{k}: extra {got[k]}" for k in got.keys() - counts.keys()]
    for line in diff[:5]:
        print(f"  pinot differs: {line}")
    pinot_baseline.drop(settings, name)
    return Result("Pinot 0.11 ingestion aggregation (count only)", events / (t1 - t0), cpu / (events / 1e6),
                  max(0.0, rss), not diff)  # fmt: skip


# Our dataflow's two configurations: the peers' task alone, and as it ships (config/pipeline.yaml); which roll-up
# answers the task in each
OURS = {"task": (str(HERE / "pipeline-task.yaml"), "task_10s"), "shipped": (None, "geo_10s")}


def read_ours(bootstrap: str, topic: str, want: dict[Key, Agg], timeout_s: float, rollup: str) -> dict[Key, Agg]:
    """Our rows of the roll-up (one per window, its dimensions and source partition; the newest version of
    each), merged to (window, type, country) as Pinot merges them at query time; returns once they equal
    `want` or at the timeout."""
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"watch-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe([topic])
    rows: dict[str, dict[str, object]] = {}
    merged: dict[Key, Agg] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msgs = consumer.consume(10_000, timeout=0.5)
            for msg in msgs:
                if msg.error() is not None or msg.value() is None:
                    continue
                row = orjson.loads(msg.value())
                if row.get("rollup_name") != rollup:
                    continue
                old = rows.get(row["pk"])
                if old is None or int(old["version"]) <= int(row["version"]):  # type: ignore[call-overload]
                    rows[row["pk"]] = row
            if msgs:
                continue
            merged = {}
            for row in rows.values():
                key = (int(row["window_start"]), str(row["type"]), row["country"])  # type: ignore[call-overload]
                agg = merged.setdefault(key, Agg())  # type: ignore[arg-type]
                agg.count += int(row["event_count"])  # type: ignore[call-overload]
                if int(row["latency_ms_count"]):  # type: ignore[call-overload]
                    agg.sum += float(row["latency_ms_sum"])  # type: ignore[arg-type]
                    lo, hi = float(row["latency_ms_min"]), float(row["latency_ms_max"])  # type: ignore[arg-type]
                    agg.min = lo if agg.min is None else min(agg.min, lo)
                    agg.max = hi if agg.max is None else max(agg.max, hi)
            if not differences(want, merged):
                break
    finally:
        consumer.close()
    return merged


def run_ours(
    topics: Topics, bootstrap: str, events: int, processes: int, want: dict[Key, Agg], label: str, variant: str
) -> Result:
    """Our dataflow, 1 or 2 processes, with the task's roll-up only or as it ships (every configured roll-up);
    sketches included either way. The rate is events folded in (its metric) from the first to the last."""
    env = topics.env()
    pipeline_file, rollup = OURS[variant]
    if pipeline_file is not None:
        env["LIVEDASH_PIPELINE_FILE"] = pipeline_file
    procs = start_dataflows(env, processes, f"peers-ours-{label}")
    try:
        kafka_pid = int((topics.settings().state_dir / "run" / "kafka.pid").read_text().split()[0])
        rate, cpu, others = measure_intake(procs, events, 3600, 0.2, others={"kafka": kafka_pid})
        rss = sum(peak_rss_mb(proc.pid) for proc, _ in procs)
        got = read_ours(bootstrap, topics.agg, want, timeout_s=600, rollup=rollup)
    finally:
        stop(procs)
    diff = differences(want, got)
    for line in diff[:5]:
        print(f"  ours ({processes}p) differs: {line}")
    name = f"livedash ({variant}), {processes} process{'es' if processes > 1 else ''}"
    return Result(name, rate, cpu, rss, not diff, others["kafka"])


def freshness(peers: set[str], rate: float, duration_s: float, warm_s: float) -> list[live.Freshness]:
    out = []
    if "ours" in peers:
        out.append(live.ours(rate, duration_s, warm_s, *OURS["task"]))
    if "quix" in peers:
        out.append(live.quix(venv_python("quix"), HERE / "quix_app.py", rate, duration_s, warm_s))
    if "flink" in peers:
        out.append(live.flink(venv_python("flink"), HERE / "flink_job.py", connector_jar(), rate, duration_s, warm_s,
                              create_topics))  # fmt: skip
    if "pinot" in peers:
        out.append(live.pinot(rate, duration_s, warm_s))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--event-rate", type=float, default=200_000.0)
    parser.add_argument("--peers", default="ours,quix,flink,pinot", help="which to run, comma-separated")
    parser.add_argument("--ours", default="task", help="our configurations: task (the peers' roll-up only), shipped")
    parser.add_argument("--freshness-rate", type=float, default=5000.0, help="events/s of the freshness runs (0: none)")
    parser.add_argument("--freshness-s", type=float, default=90.0, help="how long each freshness run produces")
    parser.add_argument("--warm-s", type=float, default=30.0, help="freshness samples dropped at the start")
    parser.add_argument("--chart", default=str(BENCH_DIR / "peers.png"), help="PNG of the figures ('' for none)")
    args = parser.parse_args()
    peers = set(args.peers.split(","))
    results: dict[str, list[Result]] = {}
    for i in range(args.runs):
        # A fresh topic per run (same seed): the events that close a run's windows stay in its topic
        topics, truth, grace, newest, last = prefill(args.events, args.partitions, args.event_rate)
        settings = topics.settings()
        want = expected(truth)
        print(f"expected: {len(want):,} windows of (type, country), computed from the events sent")
        bootstrap, runs = settings.kafka.bootstrap, []
        if "ours" in peers:
            runs += [run_ours(topics, bootstrap, args.events, n, want, f"run{i}-{v}-{n}p", v)
                     for v in args.ours.split(",") for n in (1, 2)]  # fmt: skip
        if "quix" in peers:
            runs.append(run_quix(topics, bootstrap, (last, newest, grace), want, f"run{i}", args.events))
        if "flink" in peers:
            runs += [run_flink(topics, bootstrap, want, f"run{i}-{n}p", args.events, n) for n in (1, 2)]
        if "pinot" in peers:
            runs.append(run_pinot(topics, settings, want, f"run{i}", args.events))
        for r in runs:
            results.setdefault(r.peer, []).append(r)
            exact = "exact" if r.exact else "NOT exact"
            broker = (
                ""
                if r.broker_cpu_s_per_million is None
                else (f" (Kafka broker meanwhile: {r.broker_cpu_s_per_million:.1f} CPU s per million)")
            )
            print(f"run {i + 1}, {r.peer}: {r.events_per_s:,.0f} events/s, {r.cpu_s_per_million:.1f} CPU s per "
                  f"million events{broker}, peak RSS {r.peak_rss_mb:.0f} MB, {exact}")  # fmt: skip
    fresh = freshness(peers, args.freshness_rate, args.freshness_s, args.warm_s) if args.freshness_rate > 0 else []
    for f in fresh:
        print(f"freshness at {args.freshness_rate:,.0f}/s nominal ({f.input_per_s:,.0f}/s sent), {f.peer}: "
              f"p50 {f.p50_s:.2f}s p95 {f.p95_s:.2f}s p99 {f.p99_s:.2f}s ({f.samples} samples)")  # fmt: skip
    print(f"machine: {machine()}")
    table = []
    for peer, rows in results.items():
        row = {"peer": peer, "events_per_s": median([r.events_per_s for r in rows]),
               "cpu_s_per_million": median([r.cpu_s_per_million for r in rows]),
               "peak_rss_mb": median([r.peak_rss_mb for r in rows]), "exact_runs": sum(r.exact for r in rows),
               "runs": len(rows), "each_events_per_s": [round(r.events_per_s) for r in rows],
               "broker_cpu_s_per_million": median([r.broker_cpu_s_per_million for r in rows])
               if rows[0].broker_cpu_s_per_million is not None else None}  # fmt: skip
        table.append(row)
        if row["broker_cpu_s_per_million"] is not None:
            print(f"median {peer}: Kafka broker {row['broker_cpu_s_per_million']:.1f} CPU s per million events")
        print(f"median {peer}: {row['events_per_s']:,.0f} events/s, {row['cpu_s_per_million']:.1f} CPU s per "
              f"million events, peak RSS {row['peak_rss_mb']:.0f} MB, exact in {row['exact_runs']} of {len(rows)} "
              "runs")  # fmt: skip
    for ours in (t for t in table if t["peer"].startswith("livedash")):
        ratios = ", ".join(f"{ours['events_per_s'] / t['events_per_s']:.2f}x {t['peer']}" for t in table
                           if not t["peer"].startswith("livedash"))  # fmt: skip
        print(f"ratio {ours['peer']} / peer (events/s): {ratios}")
    figures = {"events": args.events, "partitions": args.partitions, "runs": args.runs, "machine": machine(),
               "throughput": table, "freshness": [vars(f) for f in fresh],
               "freshness_rate": args.freshness_rate}  # fmt: skip
    saved = BENCH_DIR / f"peers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    saved.write_text(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
    print(f"figures: {saved}")
    if args.chart:
        from bench.peers import chart

        print(f"chart: {chart.render(figures, Path(args.chart))}")


if __name__ == "__main__":
    main()
