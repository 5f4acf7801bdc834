"""The peer task in Quix Streams 3.x: 10 s event-time tumbling windows per (type, country) with count, and sum,
min and max of latency_ms, from JSON events to a Kafka topic. Run in its own venv (bench/peers/requirements-quix.txt)
by bench.peers; it imports nothing from livedash.

Environment: BROKER, IN_TOPIC, OUT_TOPIC, GROUP, STATE_DIR, GRACE_MS, LAST_OFFSETS ("partition:offset,...": the
app writes DRAINED_FILE once it has processed them), READY_FILE (written with the wall time of the first message).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Max, Min, Sum

GRACE_MS = int(os.environ.get("GRACE_MS", "10000"))
IN_TOPIC = os.environ["IN_TOPIC"]
# partition -> offset of its last message (a valid event the harness appends): once each is processed, the
# input is read (counting messages would not do: undecodable ones never reach on_message_processed)
LAST = {int(p): int(o) for p, o in (item.split(":") for item in os.environ["LAST_OFFSETS"].split(","))}
stats = {"bad": 0, "late": 0, "consumed": 0, "first": 0.0}


def ts_extractor(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    return int(value["ts"])  # raises on a non-object or a missing ts: on_consumer_error skips the message


def on_consumer_error(exc: BaseException, message: Any, logger: Any) -> bool:
    if message is not None:  # undecodable JSON or no event time: skip it, as the other peers do
        stats["bad"] += 1
        return True
    return False


def on_processing_error(exc: BaseException, row: Any, logger: Any) -> bool:
    stats["bad"] += 1
    return True


def on_late(*args: Any, **kwargs: Any) -> bool:
    stats["late"] += 1
    return False


def on_message_processed(topic: str, partition: int, offset: int) -> None:
    if topic == IN_TOPIC:
        if not stats["consumed"]:
            stats["first"] = time.time()
            with open(os.environ["READY_FILE"], "w") as f:
                f.write(repr(stats["first"]))
        stats["consumed"] += 1
        if LAST.get(partition) == offset:
            del LAST[partition]
            if not LAST:  # the harness then sends the events that close the last windows
                with open(os.environ["DRAINED_FILE"], "w") as f:
                    f.write(repr(time.time()))


app = Application(
    broker_address=os.environ.get("BROKER", "127.0.0.1:9092"),
    consumer_group=os.environ["GROUP"],
    auto_offset_reset="earliest",
    on_consumer_error=on_consumer_error,
    on_processing_error=on_processing_error,
    on_message_processed=on_message_processed,
    state_dir=os.environ["STATE_DIR"],
    loglevel="WARNING",
)
src = app.topic(IN_TOPIC, value_deserializer="json", timestamp_extractor=ts_extractor)
out = app.topic(os.environ["OUT_TOPIC"], key_serializer="str", value_serializer="json")

sdf = app.dataframe(src)
sdf = sdf.filter(lambda v: isinstance(v, dict) and isinstance(v.get("type"), str) and "country" in v)
sdf = sdf.group_by(lambda v: f"{v['type']}|{v.get('country')}", name="type_country")
sdf = (
    sdf.tumbling_window(timedelta(seconds=10), grace_ms=GRACE_MS, on_late=on_late)
    .agg(
        count=Count(),
        sum_latency_ms=Sum("latency_ms"),
        min_latency_ms=Min("latency_ms"),
        max_latency_ms=Max("latency_ms"),
    )
    .final(closing_strategy="partition")
)


def shape(value: dict[str, Any], key: str, timestamp: int, headers: Any) -> dict[str, Any]:
    kind, country = key.split("|", 1)
    return {"type": kind, "country": country, "window_start": value["start"], "count": value["count"],
            "sum": value["sum_latency_ms"], "min": value["min_latency_ms"], "max": value["max_latency_ms"]}  # fmt: skip


sdf = sdf.apply(shape, metadata=True).to_topic(out)

if __name__ == "__main__":
    app.run(timeout=float(os.environ.get("IDLE_TIMEOUT", "0")))
    print(f"quix: {stats}", file=sys.stderr)
