"""The peer task in Flink SQL through PyFlink 2.x: 10 s event-time tumbling windows per (type, country) with
count, and sum, min and max of latency_ms, from JSON events to a Kafka topic. Run in its own venv
(bench/peers/requirements-flink.txt) by bench.peers; it imports nothing from livedash. Pure SQL: no Python
worker runs, the planner compiles it to a two-phase (local, global) window aggregate in the JVM.

The source is bounded at the offsets the topic holds when the job starts: the job ends once it has read
them, and its final watermark closes every window. A warm-up job over the first WARMUP events of each
partition (to a throwaway topic) runs first in the same JVM, so the timed job pays no JVM start or class
loading: its time runs from submission to the end.

Environment: BROKER, IN_TOPIC, OUT_TOPIC, GROUP, JAR (flink-sql-connector-kafka), PARALLELISM, PARTITIONS,
WARMUP, OUT_OF_ORDER_MS, RESULT_FILE (JSON written at the end: seconds, cpu_s, rss_mb); MODE=live: one
unbounded job and nothing else (the freshness runs).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pyflink.table import EnvironmentSettings, TableEnvironment

BROKER = os.environ.get("BROKER", "127.0.0.1:9092")
EOF_TYPE = "__eof__"


def jvm_pids() -> list[int]:
    """Our gateway JVM (a child process of this interpreter)."""
    me = str(os.getpid())
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            out.append(int(stat.parent.name))
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def source(t_env: TableEnvironment, name: str, bounded: str) -> None:
    out_of_order_s = max(1, int(os.environ.get("OUT_OF_ORDER_MS", "10000")) // 1000)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE {name} (
            `type` STRING,
            country STRING,
            latency_ms DOUBLE,
            ts BIGINT,
            et AS TO_TIMESTAMP_LTZ(ts, 3),
            WATERMARK FOR et AS et - INTERVAL '{out_of_order_s}' SECOND
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{os.environ["IN_TOPIC"]}',
            'properties.bootstrap.servers' = '{BROKER}',
            'properties.group.id' = '{os.environ["GROUP"]}-{name}',
            'scan.startup.mode' = 'earliest-offset',{bounded}
            'format' = 'json',
            'json.ignore-parse-errors' = 'true'
        )""")


def sink(t_env: TableEnvironment, name: str, topic: str) -> None:
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE {name} (
            `type` STRING,
            country STRING,
            window_start BIGINT,
            `count` BIGINT,
            `sum` DOUBLE,
            `min` DOUBLE,
            `max` DOUBLE
        ) WITH (
            'connector' = 'kafka',
            'topic' = '{topic}',
            'properties.bootstrap.servers' = '{BROKER}',
            'sink.delivery-guarantee' = 'at-least-once',
            'format' = 'json'
        )""")


def insert(src: str, dst: str) -> str:
    # window_start is a zone-less TIMESTAMP in the session zone (UTC); UNIX_TIMESTAMP reads it back as epoch s
    return f"""
        INSERT INTO {dst}
        SELECT `type`, country, UNIX_TIMESTAMP(CAST(window_start AS STRING)) * 1000,
               COUNT(*), SUM(latency_ms), MIN(latency_ms), MAX(latency_ms)
        FROM TABLE(TUMBLE(TABLE {src}, DESCRIPTOR(et), INTERVAL '10' SECOND))
        WHERE `type` <> '{EOF_TYPE}'
        GROUP BY window_start, window_end, `type`, country"""


def main() -> None:
    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    conf.set("pipeline.jars", Path(os.environ["JAR"]).resolve().as_uri())
    conf.set("parallelism.default", os.environ.get("PARALLELISM", "1"))
    conf.set("table.local-time-zone", "UTC")
    conf.set("table.exec.source.idle-timeout", "5 s")

    partitions = int(os.environ.get("PARTITIONS", "4"))
    warmup = int(os.environ.get("WARMUP", "1000"))
    offsets = ";".join(f"partition:{p},offset:{warmup}" for p in range(partitions))
    if os.environ.get("MODE") == "live":  # unbounded, on events arriving at a fixed rate: runs until killed
        source(t_env, "events", "")
        sink(t_env, "windows", os.environ["OUT_TOPIC"])
        t_env.execute_sql(insert("events", "windows")).wait()
        return
    source(
        t_env, "warm_in", f"'scan.bounded.mode' = 'specific-offsets', 'scan.bounded.specific-offsets' = '{offsets}',"
    )
    sink(t_env, "warm_out", os.environ["OUT_TOPIC"] + "_warmup")
    t_env.execute_sql(insert("warm_in", "warm_out")).wait()

    source(t_env, "events", "'scan.bounded.mode' = 'latest-offset',")
    sink(t_env, "windows", os.environ["OUT_TOPIC"])
    jvms = jvm_pids()
    cpu0 = sum(cpu_s(p) for p in jvms)
    t0 = time.time()
    t_env.execute_sql(insert("events", "windows")).wait()
    t1 = time.time()
    cpu = sum(cpu_s(p) for p in jvms) - cpu0
    rss = sum(peak_rss_mb(p) for p in jvms) + peak_rss_mb(os.getpid())
    result = {"start": t0, "end": t1, "seconds": t1 - t0, "cpu_s": cpu, "rss_mb": rss, "jvms": jvms}
    Path(os.environ["RESULT_FILE"]).write_text(json.dumps(result))
    print(f"flink: {result}", flush=True)


if __name__ == "__main__":
    main()
