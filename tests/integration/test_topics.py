"""Topic settings applied by `livedash apply` on the real broker."""

from __future__ import annotations

from livedash import apply
from livedash.config import Settings
from livedash.kafka import admin as kafka


def test_the_aggregates_topic_keeps_the_newest_row_per_key(stack: Settings) -> None:
    admin = kafka.kafka_admin(stack.kafka.bootstrap)
    keys = ["cleanup.policy", "segment.ms", "retention.ms"]
    got = apply.topic_configs(admin, stack.pipeline.topics.aggregates, keys)
    history = apply.topic_configs(admin, stack.pipeline.topics.history, keys)
    live = apply.topic_configs(admin, stack.pipeline.topics.live, keys)
    raw = apply.topic_configs(admin, stack.pipeline.topics.raw, ["cleanup.policy"])
    # Newest row per key, and gone after the tier's retention (as in Pinot)
    hour = 3_600_000
    recent, kept = stack.pipeline.retention.recent_h, stack.pipeline.retention.history_h
    assert got == {"cleanup.policy": "compact,delete", "segment.ms": "600000", "retention.ms": str(recent * hour)}
    assert history == {"cleanup.policy": "compact,delete", "segment.ms": "600000", "retention.ms": str(kept * hour)}
    minutes = stack.pipeline.retention.live_min
    assert live == {"cleanup.policy": "compact,delete", "segment.ms": "600000", "retention.ms": str(minutes * 60_000)}
    assert raw == {}  # the raw events keep the broker's delete policy: every event stays until retention
