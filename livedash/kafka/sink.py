"""A Bytewax sink that writes each item to the topic its role names, and never loses one silently.

Unlike Bytewax 0.21's KafkaSink: delivery errors raise (the dataflow stops and resumes from its last snapshot,
so nothing is lost), a full producer queue waits for room instead of raising BufferError, and keys are
partitioned with murmur2 like the Java clients, so every producer of a key agrees on its partition (Pinot's
upsert keeps one key's versions in one partition). Every batch is flushed before write_batch returns, so no
snapshot can cover output still in flight.
"""

from __future__ import annotations

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from livedash.errors import LivedashError
from livedash.kafka.messages import Item, ValidEvents


class DeliveryFailed(LivedashError):
    pass


class _TopicPartition(StatelessSinkPartition[Item]):
    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.topics = topics
        self.failures: list[str] = []
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "partitioner": "murmur2_random",
                "linger.ms": 5,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 500_000,
                "delivery.report.only.error": True,  # the callback below runs for failures only: no per-row cost
            }
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err.str()}")

    def write_batch(self, items: list[Item]) -> None:
        produce, poll = self.producer.produce, self.producer.poll
        for item in items:
            if isinstance(item, ValidEvents):
                self._write_events(item)
                continue
            while True:
                try:
                    if item.partition is None:
                        produce(self.topics[item.role], value=item.value, key=item.key,
                                headers=list(item.headers) or None, on_delivery=self._on_delivery)  # fmt: skip
                    else:  # a watermark marker: back into the partition it is for
                        produce(self.topics[item.role], value=item.value, key=item.key, partition=item.partition,
                                on_delivery=self._on_delivery)  # fmt: skip
                    break
                except BufferError:  # queue full: back-pressure until deliveries free room
                    poll(0.05)
        remaining = self.producer.flush(60)  # the valid events too: a snapshot counts them as written
        if remaining:
            raise DeliveryFailed(f"{remaining} messages not delivered within 60s: is Kafka reachable?")
        if self.failures:
            raise DeliveryFailed(f"{len(self.failures)} messages failed delivery, first: {self.failures[0]}")

    def _write_events(self, item: ValidEvents) -> None:
        """One batch's valid events, in order, into their partition."""
        produce, poll, on_delivery = self.producer.produce, self.producer.poll, self._on_delivery
        topic, partition = self.topics["valid"], item.partition
        for key, value in zip(item.keys, item.values, strict=True):
            while True:
                try:
                    produce(topic, value, key, partition, on_delivery)
                    break
                except BufferError:
                    poll(0.05)

    def close(self) -> None:
        self.producer.flush(30)


class TopicSink(DynamicSink[Item]):
    def __init__(self, bootstrap: str, topics: dict[str, str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TopicPartition:
        return _TopicPartition(self.bootstrap, self.topics)
