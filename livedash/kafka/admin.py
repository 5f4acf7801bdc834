"""One Kafka admin client (confluent-kafka's) and topic creation, for apply, the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka.admin import AdminClient, NewTopic


def kafka_admin(bootstrap: str) -> AdminClient:
    """An admin client whose requests time out after 15 s (librdkafka's socket.timeout.ms, the default of every
    admin call's request and operation timeouts). librdkafka's own log is off: a failed call raises with why."""
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "livedash-apply", "socket.timeout.ms": 15_000,
                        "log_level": 0})  # fmt: skip


def create_topics(admin: AdminClient, partitions: Mapping[str, int], configs: Mapping[str, str] | None = None) -> None:
    """Create each topic with its partition count (replication 1) and wait until the broker has; a topic that
    exists already raises KafkaException (TOPIC_ALREADY_EXISTS), as any other failure does."""
    topics = [NewTopic(name, count, 1, config=dict(configs or {})) for name, count in partitions.items()]
    for future in admin.create_topics(topics).values():
        future.result()
