"""The aggregation dataflow: raw events -> validated -> per-partition event-time windows -> Kafka.

Run it (recovery snapshots on; see docs/operations.md for the recovery directory):

    python -m bytewax.run dataflows.aggregate:flow -r .livedash/recovery/v5 -s 5 -b 0

Steps: `kafka_in` (WindowedSource: each partition of the raw topic is read and windowed in one place, by one
`PartitionLogic`: parse and validate, fold into panes, publish running values every `publish_every_s`, final
rows when the partition's watermark passes a window's end plus the allowed lateness; its snapshot holds the
offset and the windows together) -> `kafka_out` (aggregates, history, valid, dead-letter and late topics,
every delivery checked).

With windows.merge_shards (the two-phase merge, docs/architecture.md): `kafka_in` sends each tick's group gains
as packed ShardTicks, `ticks` splits them from the other messages, `merge` (a keyed step, one MergeLogic per
shard) publishes one row per window and group, and both go to `kafka_out`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, cast

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.outputs import Sink

from livedash import config
from livedash.dataflow import heap
from livedash.dataflow.logic import Clock, ShardTick, utc_now
from livedash.dataflow.merging import MergeLogic
from livedash.dataflow.source import WindowedSource
from livedash.kafka.messages import Item
from livedash.kafka.offsets import EndOffsets
from livedash.kafka.sink import TopicSink
from livedash.kafka.source import KafkaBatchSource
from livedash.pipeline.settings import PipelineSettings

# Cyclic GC generation thresholds: a Kafka batch allocates ~10,000 GC-tracked message objects, so at Python's
# default (700) every batch ran ~14 young collections and, every few batches, a full one over all the windows'
# state: 8% of a process's CPU (gc.callbacks over 3 million events). Batches free their objects by reference
# count; nothing of ours forms cycles (a retired pane did, and held GBs: RollupWindows.drop breaks it), since
# full collections are rare at these thresholds.
GC_THRESHOLDS = (50_000, 20, 100)


def build_windowed_flow(source: WindowedSource, sink: Sink[Item]) -> Dataflow:
    """The shipped flow: `kafka_in` (read and windowed per partition) -> `kafka_out`. Without the merge, no
    exchange between workers: each process writes what its own partitions produce."""
    flow = Dataflow("livedash_aggregate")
    items: Stream[Any] = op.input("kafka_in", flow, source)
    if source.settings.windows.merge_shards:
        partitions = [int(p) for p in source.list_parts()]
        items = merged(items, source.settings, partitions, source.clock)
    op.output("kafka_out", items, sink)
    return flow


def merged(items: Stream[Any], settings: PipelineSettings, partitions: Sequence[int],
           clock: Clock = utc_now) -> Stream[Item]:  # fmt: skip
    """Phase two: the partitions' ShardTicks through the merge shards (every shard waits for all of
    `partitions`); every other item passes by."""
    split = op.branch("ticks", items, lambda item: isinstance(item, ShardTick))
    ticks = cast("Stream[tuple[str, bytes]]", split.trues)  # a ShardTick is a (key, payload) pair
    shards = op.stateful_batch("merge", ticks, lambda state: MergeLogic(settings, partitions, clock, state))
    rows = op.map("merged_rows", shards, itemgetter(1))  # one OutBatch per shard and publish
    return op.merge("all_out", split.falses, rows)


def tune_gc() -> None:
    """Objects alive now (modules, settings, clients) are permanent: full collections skip them. Then the
    thresholds above."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def kafka_flow() -> Dataflow:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = config.load()
    topics = settings.pipeline.topics
    bootstrap = settings.kafka.bootstrap
    valid_end = EndOffsets(bootstrap, topics.valid) if topics.valid is not None else None
    source = WindowedSource(KafkaBatchSource(bootstrap, topics.raw), settings.pipeline,
                            end_offset=EndOffsets(bootstrap, topics.raw), valid_end=valid_end)  # fmt: skip
    roles = {
        "aggregates": topics.aggregates,
        "history": topics.history,
        "live": topics.live,
        "dead_letter": topics.dead_letter,
        "late": topics.late,
        "marker": topics.raw,
    }
    sink = TopicSink(bootstrap, {**roles, "valid": topics.valid} if topics.valid is not None else roles)
    tune_gc()
    heap.fix_mmap_threshold()
    return build_windowed_flow(source, sink)
