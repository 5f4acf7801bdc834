"""Reproduces a Pinot 0.11 stall by hand (not collected by pytest; needs `bin/livedash up`, about 7 minutes):
the Kafka broker down while a segment commits leaves that partition without a consuming segment until the
controller's RealtimeSegmentValidationManager repairs it (docs/reliability.md, scenario 2).

    .venv/bin/python -m tests.manual.pinot_commit_stall

A one-partition table that commits by time (40 s) gets 10 rows; the broker is stopped 20 s in and started
again 40 s later, across the commit; 10 more rows are sent. Prints the count every 15 s until it reaches 20.
"""

from __future__ import annotations

import time
import uuid

import orjson
from confluent_kafka import Producer

from livedash import apply, config
from livedash.kafka import admin
from livedash.pinot.client import PinotClient
from livedash.stack import manager
from livedash.wait import poll


def main() -> None:
    s = config.load()
    name = f"stall_{uuid.uuid4().hex[:6]}"

    def say(msg: str) -> None:
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    admin.create_topics(admin.kafka_admin(s.kafka.bootstrap), {name: 1})
    schema, table = apply.load_table("aggregates", s)
    schema["schemaName"] = table["tableName"] = table["segmentsConfig"]["schemaName"] = name
    streams = table["tableIndexConfig"]["streamConfigs"]
    streams["stream.kafka.topic.name"] = name
    streams["realtime.segment.flush.threshold.rows"] = "1000000"
    streams.pop("realtime.segment.flush.threshold.segment.size", None)
    streams["realtime.segment.flush.threshold.time"] = "40s"
    apply.apply_schema(s, schema)
    apply.apply_table(s, table)
    producer = Producer({"bootstrap.servers": s.kafka.bootstrap})

    def send(first: int) -> None:
        for i in range(first, first + 10):
            row = {"pk": f"k{i}", "rollup_name": "x", "window_start": 0, "window_end": 1, "source_partition": 0,
                   "kind": "window", "event_count": 1, "is_final": 1, "version": i,
                   "last_event_ts": int(time.time() * 1000)}  # fmt: skip
            producer.produce(name, key=f"k{i}", value=orjson.dumps(row))
        assert producer.flush(60) == 0

    send(0)
    time.sleep(20)
    manager.down(s, say=lambda _: None, only=["kafka"])
    say("broker down across the segment's 40 s commit")
    time.sleep(40)
    manager.up(s, say=lambda _: None)
    up = time.monotonic()
    say("broker up")
    send(100)
    client = PinotClient(s.pinot.broker_url, timeout_s=30)

    def count() -> int:
        rows = int(client.query(f"SELECT COUNT(*) FROM {name}").rows[0][0])
        say(f"rows in Pinot: {rows}")
        return rows

    if poll(count, 900 - (time.monotonic() - up), every_s=15, done=lambda rows: rows >= 20) >= 20:
        say(f"all rows in {time.monotonic() - up:.0f} s after the broker was up")
    else:
        say("not repaired within 15 minutes")


if __name__ == "__main__":
    main()
