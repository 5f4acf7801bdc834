"""Prometheus metrics of the aggregation dataflow, served by Bytewax's API server with its own metrics:

    BYTEWAX_DATAFLOW_API_ENABLED=1 BYTEWAX_DATAFLOW_API_PORT=3030 python -m bytewax.run ...
    curl http://127.0.0.1:3030/metrics

Consumer lag is the raw topic's end offset (livedash.kafka.offsets) minus the last offset this dataflow folded
in: Bytewax keeps its offsets in recovery snapshots, not in a consumer group, so no Kafka tool can see them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS_IN = Counter("livedash_events_in", "Raw messages read", ["partition"])
DEAD_LETTERED = Counter(
    "livedash_events_dead_lettered", "Invalid messages sent to the dead-letter topic", ["partition"]
)
LATE = Counter("livedash_events_late", "Events past allowed lateness (counted through correction rows)", ["partition"])
DUPLICATES = Counter("livedash_events_duplicate", "Duplicates dropped (an event_id seen before in the partition, "
                     "within the dedup horizon); restored from snapshots", ["partition"])  # fmt: skip
DEDUP_IDS = Gauge("livedash_dedup_ids", "Event ids remembered for deduplication", ["partition"])
ROWS_OUT = Counter("livedash_rows_out", "Aggregate rows published (provisional, final and corrections)", ["partition"])
PARTIALS_OUT = Counter("livedash_partials_out", "Group gains sent to the merge shards (windows.merge_shards)",
                       ["partition"])  # fmt: skip
MERGED_ROWS_OUT = Counter("livedash_merged_rows_out", "Rows the merge shards published (provisional and final)")
PROCESSED_OFFSET = Gauge("livedash_processed_offset", "Last raw-topic offset folded in", ["partition"])
CONSUMER_LAG = Gauge("livedash_consumer_lag_events", "Raw-topic end offset minus processed offset", ["partition"])
WATERMARK_DELAY = Gauge("livedash_watermark_delay_seconds", "Wall clock minus the partition's watermark", ["partition"])
