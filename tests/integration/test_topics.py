"""Topic settings applied by `livedash apply` on the real broker."""

from __future__ import annotations

from kafka import KafkaAdminClient

from livedash import apply
from livedash.config import Settings


def test_the_aggregates_topic_keeps_the_newest_row_per_key(stack: Settings) -> None:
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap)
    try:
        got = apply._topic_configs(admin, stack.pipeline.topics.aggregates, ["cleanup.policy", "segment.ms"])
        raw = apply._topic_configs(admin, stack.pipeline.topics.raw, ["cleanup.policy"])
    finally:
        admin.close()
    assert got == {"cleanup.policy": "compact", "segment.ms": "600000"}
    assert raw == {}  # the raw events keep the broker's delete policy: every event stays until retention
