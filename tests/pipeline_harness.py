"""An isolated pipeline on the real test stack: its own topics, Pinot table and recovery dir, and the dataflow
run as operators run it (`python -m bytewax.run dataflows.aggregate:flow`), so tests can kill -9 it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import Producer

from livedash import apply, config
from livedash.config import Settings
from livedash.pinot.client import PinotClient
from livedash.wait import poll
from tests.conftest import ROOT, TEST_CONFIG
from tests.malformed import valid_event
from tests.pinot_query import attempt, query

T = TypeVar("T")


# The shipped roll-ups have no sliding window (config/pipeline.yaml says why); the pipelines here add this one, so
# that every end-to-end check (kill -9, restarts, verify, the ground truth) covers sliding windows too.
SLIDING = {"name": "type_5m_sliding", "dimensions": ["type"], "window": {"size_s": 300, "every_s": 10}}


def with_sliding(settings: Settings) -> str:
    """LIVEDASH_PIPELINE__ROLLUPS: the configured roll-ups and SLIDING."""
    rollups = [r.model_dump(mode="json", by_alias=True) for r in settings.pipeline.rollups]
    return json.dumps([*rollups, SLIDING] if all(r["name"] != SLIDING["name"] for r in rollups) else rollups)


@dataclass
class Pipeline:
    stack: Settings
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    lateness_s: int = 30
    # Rows per consuming segment: small, so every run crosses segment commits (upserts across completed segments,
    # and the controller's segment upload path, which a misconfigured controller port breaks).
    segment_rows: int = 10_000
    # The table config agg_<suffix> is made from (its retention: a backfill days old needs the history tier's)
    template: str = "aggregates"
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # more LIVEDASH_* settings (roll-ups, dedup, ...)

    @property
    def raw(self) -> str:
        return f"raw_{self.suffix}"

    @property
    def table(self) -> str:
        return f"agg_{self.suffix}"

    @property
    def valid(self) -> str:
        """The valid events' topic."""
        return f"valid_{self.suffix}"

    @property
    def events(self) -> str:
        """The raw-events table (reads the valid topic), as events_raw does for the shipped pipeline."""
        return f"ev_{self.suffix}"

    @property
    def dead_letter(self) -> str:
        return f"dlq_{self.suffix}"

    @property
    def late(self) -> str:
        return f"late_{self.suffix}"

    @property
    def recovery_dir(self) -> Path:
        return ROOT / ".livedash-test" / f"recovery-{self.suffix}"

    def env(self) -> dict[str, str]:
        topics = [
            {"name": self.raw, "partitions": 4},
            {"name": self.valid, "partitions": 4},
            {"name": self.table, "partitions": 4},
            {"name": self.dead_letter, "partitions": 1},
            {"name": self.late, "partitions": 1},
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDASH_")}
        env.update(
            {
                "LIVEDASH_CONFIG": str(TEST_CONFIG),
                "LIVEDASH_KAFKA__TOPICS": json.dumps(topics),
                "LIVEDASH_PIPELINE__TOPICS__RAW": self.raw,
                "LIVEDASH_PIPELINE__TOPICS__AGGREGATES": self.table,
                "LIVEDASH_PIPELINE__TOPICS__HISTORY": self.table,  # both tiers in one table: one place to compare
                "LIVEDASH_PIPELINE__TOPICS__LIVE": self.table,  # and the open windows (no copies of final rows)
                "LIVEDASH_PIPELINE__TOPICS__DEAD_LETTER": self.dead_letter,
                "LIVEDASH_PIPELINE__TOPICS__LATE": self.late,
                "LIVEDASH_PIPELINE__TOPICS__VALID": self.valid,
                "LIVEDASH_PIPELINE__WINDOWS__ALLOWED_LATENESS_S": str(self.lateness_s),
                "LIVEDASH_PIPELINE__ROLLUPS": with_sliding(self.stack),
                **self.extra_env,
            }
        )
        return env

    def settings(self) -> Settings:
        return config.load(TEST_CONFIG, environ=self.env())

    def create(self) -> None:
        """Topics and a Pinot upsert table named agg_<suffix>, from pinot/tables/<template>."""
        settings = self.settings()
        for topic in settings.kafka.topics:
            apply.ensure_topic(settings, topic.name, say=lambda _: None)
        schema, table = apply.load_table(self.template, settings)
        schema["schemaName"] = self.table
        table["tableName"] = table["segmentsConfig"]["schemaName"] = self.table
        streams = table["tableIndexConfig"]["streamConfigs"]
        streams["stream.kafka.topic.name"] = self.table
        streams["realtime.segment.flush.threshold.rows"] = str(self.segment_rows)
        streams.pop("realtime.segment.flush.threshold.segment.size", None)
        apply.apply_schema(settings, schema)
        apply.apply_table(settings, table)
        schema, table = apply.load_table("events_raw", settings)
        schema["schemaName"] = self.events
        table["tableName"] = table["segmentsConfig"]["schemaName"] = self.events
        table["tableIndexConfig"]["streamConfigs"]["stream.kafka.topic.name"] = self.valid
        apply.apply_schema(settings, schema)
        apply.apply_table(settings, table)
        self.recovery_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(self.recovery_dir), "1"], check=True,
                       capture_output=True)  # fmt: skip

    def start_dataflow(self, metrics_port: int | None = None) -> subprocess.Popen[bytes]:
        log = self.log_file(len(self.procs)).open("ab")
        env = self.env()
        if metrics_port is not None:  # its Prometheus endpoint, as the managed dataflow has
            env.update(BYTEWAX_DATAFLOW_API_ENABLED="1", BYTEWAX_DATAFLOW_API_PORT=str(metrics_port))
        proc = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "dataflows.aggregate:flow", "-r", str(self.recovery_dir),
             "-s", "1", "-b", "0"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def log_file(self, run: int) -> Path:
        return ROOT / ".livedash-test" / f"dataflow-{self.suffix}-{run}.log"

    def committed_epoch(self) -> int:
        """The epoch a restart would resume from (0: nothing snapshotted yet), from Bytewax's recovery store."""
        import sqlite3

        epochs = []
        for part in self.recovery_dir.glob("part-*.sqlite3"):
            with sqlite3.connect(part, timeout=10) as db:
                epochs += [row[0] for row in db.execute("SELECT commit_epoch FROM commits")]
        return min(epochs, default=0)

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)

    def topic_size(self, topic: str) -> int:
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.stack.kafka.bootstrap, "group.id": "livedash-test-size"})
        try:
            meta = consumer.list_topics(topic, timeout=10)
            total = 0
            for p in meta.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                total += high - low
            return total
        finally:
            consumer.close()

    def distinct_sources(self, topic: str) -> int:
        """Distinct (source partition, offset) headers in a side-output topic."""
        from confluent_kafka import Consumer

        consumer = Consumer({"bootstrap.servers": self.stack.kafka.bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
        seen: set[tuple[bytes, bytes]] = set()
        try:
            consumer.subscribe([topic])
            target = self.topic_size(topic)
            deadline = time.monotonic() + 60
            read = 0
            while read < target and time.monotonic() < deadline:
                for msg in consumer.consume(10_000, timeout=1.0):
                    if msg.error():
                        continue
                    read += 1
                    headers = dict(msg.headers() or [])
                    seen.add((headers["livedash.source.partition"], headers["livedash.source.offset"]))
        finally:
            consumer.close()
        return len(seen)

    def drop(self) -> None:
        pinot = PinotClient.of(self.stack.pinot)
        for name in (self.table, self.events):
            pinot.drop(name)


def corrections_due_s(settings: Settings) -> float:
    """How long a window's late corrections can follow its final row into Pinot: the late cadence
    (windows.late_publish_every_s: ended windows are re-published that often while they gain late events) plus
    Pinot's ingestion."""
    return settings.pipeline.windows.late_publish_every_s + 10


def query_all(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Every row (Pinot's own timeout 60 s); a PinotError when Pinot fails, reports an exception or answers
    partly."""
    return query(settings, sql, timeout_s=60.0)


def wait_progressing(fn: Callable[[], T], done: Callable[[T], bool], stall_s: float, cap_s: float) -> tuple[bool, str]:
    """Poll fn() every second until done(value). Gives up when the value has not changed for stall_s (errors,
    such as Pinot still starting, count as no change) or after cap_s in all: a catch-up whose length depends on
    the machine's speed passes while it keeps moving, and a stuck one fails. Returns (done, what was seen)."""
    start = last_move = time.monotonic()
    value: T | None = None

    def look() -> tuple[bool, str] | None:
        """The outcome once there is one, else None (look again)."""
        nonlocal value, last_move
        seen = attempt(fn)  # Pinot warming up: retry, but it does not count as progress
        now = time.monotonic()
        if not isinstance(seen, Exception):
            if done(seen):
                return True, f"{seen!r} after {now - start:.0f} s"
            if seen != value:
                value, last_move = seen, now
        if now - last_move > stall_s:
            return False, f"no progress for {stall_s:.0f} s (last {value!r}, now {seen!r})"
        return None

    outcome = poll(look, cap_s, every_s=1.0, done=lambda found: found is not None)
    return outcome or (False, f"not done after {cap_s:.0f} s, still moving (last {value!r})")


def wait_stable(fn: Any, want: Any, timeout_s: float = 240, quiet_s: float = 3) -> Any:
    """Poll until fn() == want and stays so for quiet_s; returns the last value."""

    def look() -> tuple[Any, bool]:
        value = attempt(fn)  # Pinot warming up: retry until the deadline
        if value == want:
            time.sleep(quiet_s)
            return value, fn() == want
        return value, False

    return poll(look, timeout_s, every_s=1.0, done=lambda seen: seen[1])[0]


def closing_events(producer: Producer, topic: str, ts: int, tag: str, partitions: int = 4) -> list[dict[str, Any]]:
    """One valid event at ts in each partition, produced (the caller flushes) and returned: every partition's
    watermark passes the windows ending by then (a quiet partition's would follow the clock only after
    idle_timeout_s, at the clock's pace)."""
    out = []
    for partition in range(partitions):
        event = valid_event(10**7 + partition, event_id=f"close-{tag}-{partition}", ts=ts)
        producer.produce(topic, value=orjson.dumps(event), key=event["user_id"].encode(), partition=partition)
        out.append(event)
    return out


def close_windows(stack: Settings, topic: str, ts: int, tag: str) -> list[dict[str, Any]]:
    """closing_events through a producer of its own, every delivery checked."""
    closer = Producer({"bootstrap.servers": stack.kafka.bootstrap})
    out = closing_events(closer, topic, ts, tag)
    assert closer.flush(30) == 0
    return out
