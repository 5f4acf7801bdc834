"""The Kafka batch source against the real broker: the columns of a batch are the messages', in order."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Producer

from livedash.config import Settings
from livedash.kafka import admin
from livedash.kafka.source import KafkaBatchSource, RecordBatch


def test_a_batch_carries_each_message_s_offset_timestamp_key_and_value(stack: Settings) -> None:
    bootstrap = stack.kafka.bootstrap
    topic = f"test_source_{uuid.uuid4().hex[:8]}"
    admin.create_topics(admin.kafka_admin(bootstrap), {topic: 2})
    t = 1_700_000_000_000
    sent = [(b"k0", b'{"a":0}', t), (None, b'{"a":1}', t + 1), (b"k2", b"", t + 5), (b"k3", None, t - 1),
            (None, b"x" * 1000, t + 10)]  # fmt: skip
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, ts in sent:
        producer.produce(topic, value, key, partition=1, timestamp=ts)
    producer.produce(topic, b"other partition", partition=0)
    assert producer.flush(30) == 0

    source = KafkaBatchSource(bootstrap, topic, batch_size=3)
    assert source.list_parts() == ["0", "1"]
    part = source.build_part("kafka_in", "1", None)
    batches: list[RecordBatch] = []
    deadline = time.monotonic() + 30
    while sum(map(len, batches)) < len(sent) and time.monotonic() < deadline:
        batches += part.next_batch()
    resumed = source.build_part("kafka_in", "1", part.snapshot() - 2)  # as after a restore: from an offset
    again: list[RecordBatch] = []
    while sum(map(len, again)) < 2 and time.monotonic() < deadline:
        again += resumed.next_batch()
    part.close()
    resumed.close()

    assert all(0 < len(b) <= 3 for b in batches)  # at most batch_size each (fewer when less is fetched yet)
    assert {b.partition for b in batches + again} == {1}
    assert [o for b in batches for o in b.offsets] == [0, 1, 2, 3, 4]
    assert [(k, v, t) for b in batches for k, v, t in zip(b.keys, b.values, b.timestamps, strict=True)] == sent
    assert part.snapshot() == 5  # the next offset to read
    assert [o for b in again for o in b.offsets] == [3, 4]
    assert [v for b in again for v in b.values] == [None, b"x" * 1000]
