"""A topic's end offset per partition, as the consumer lag and the exactly-once publish of valid events need it."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

EndOffset = Callable[[int], int | None]


class EndOffsets:
    """A topic's end offset per partition, asked of the broker at most once a second per partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "livedash-lag-probe",
                                  "enable.auto.commit": False})  # fmt: skip
        self.cache: dict[int, tuple[float, int]] = {}

    def __call__(self, partition: int) -> int | None:
        now = time.monotonic()
        hit = self.cache.get(partition)
        if hit and now - hit[0] < 1.0:
            return hit[1]
        try:
            _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=2)
        except KafkaException:
            return hit[1] if hit else None
        self.cache[partition] = (now, high)
        return high
