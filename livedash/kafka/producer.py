"""The one way we produce to Kafka: idempotent, acks=all, every delivery checked, a full queue waited out.

Used by the dataflow's sink (livedash.kafka.sink), the generator and `livedash sample`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from livedash.errors import LivedashError


class DeliveryFailed(LivedashError):
    pass


class CheckedProducer:
    """Counts deliveries (unless "delivery.report.only.error" is set); `flush()` raises if any message failed
    or is still in flight, and a full local queue waits for room (back-pressure) instead of raising
    BufferError."""

    def __init__(self, bootstrap: str, **extra: str | int | bool) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,  # implies acks=all and safe retries: no duplicates, no reordering
                "linger.ms": 20,
                "compression.type": "lz4",
                **extra,
            }
        )
        self.delivered = 0
        self.failed: list[str] = []

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.failed.append(f"{msg.topic()}: {err.str()}")

    def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """One message; partition None: by key (murmur2 where the producer is so configured)."""
        heads: list[tuple[str, str | bytes | None]] | None = list(headers) if headers else None
        while True:
            try:
                if partition is None:
                    self._producer.produce(topic, value, key, headers=heads, on_delivery=self._on_delivery)
                else:
                    self._producer.produce(topic, value, key, partition, self._on_delivery, headers=heads)
                break
            except BufferError:  # local queue full: back-pressure, not a crash
                self._producer.poll(0.05)

    def send_to_partition(
        self, topic: str, partition: int, keys: Sequence[bytes | None], values: Sequence[bytes]
    ) -> None:
        """Messages in order into one partition: the hot path of the valid events (one produce each, no
        keyword arguments)."""
        produce, poll, on_delivery = self._producer.produce, self._producer.poll, self._on_delivery
        for key, value in zip(keys, values, strict=True):
            while True:
                try:
                    produce(topic, value, key, partition, on_delivery)
                    break
                except BufferError:
                    poll(0.05)

    def send_many(self, topic: str, keys: list[bytes], values: list[bytes]) -> None:
        """A chunk at a time (librdkafka's batch call: far less per-message overhead than produce())."""
        batch: list[dict[str, Any]] = [{"key": k, "value": v} for k, v in zip(keys, values, strict=True)]
        while batch:
            try:
                queued = self._producer.produce_batch(topic, batch, on_delivery=self._on_delivery)
            except BufferError:
                queued = 0
            failed = [m for m in batch[:queued] if "_error" in m] if queued < len(batch) else []
            if failed:  # refused when queued (not a delivery failure): report like one
                self.failed.extend(f"{topic}: {m['_error']}" for m in failed)
            batch = batch[queued:]
            self._producer.poll(0.05 if batch else 0)  # queue full: serve callbacks, then retry the rest

    def poll(self) -> None:
        """Serve delivery callbacks without waiting."""
        self._producer.poll(0)

    def flush(self, timeout_s: float = 60.0) -> int:
        """Wait for every delivery report; the number delivered so far. Raises DeliveryFailed on any failure."""
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryFailed(f"{remaining} messages still undelivered after {timeout_s:.0f}s: is Kafka up?")
        if self.failed:
            raise DeliveryFailed(f"{len(self.failed)} messages failed delivery, first: {self.failed[0]}")
        return self.delivered

    def close(self, timeout_s: float = 30.0) -> None:
        """Deliver what is queued, without raising (the caller is stopping anyway)."""
        self._producer.flush(timeout_s)
