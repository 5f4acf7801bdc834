"""Test scaffolding for the dataflow: raw records, batches of them, and the same PartitionLogic behind a keyed
stateful step for sources that mix partitions (Bytewax's TestingSource)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from livedash.dataflow.flow import merged
from livedash.dataflow.logic import Clock, PartitionLogic, utc_now
from livedash.kafka.messages import Item
from livedash.kafka.offsets import EndOffset
from livedash.kafka.source import RecordBatch
from livedash.pipeline.settings import PipelineSettings


@dataclass(slots=True, frozen=True)
class Record:
    """One raw Kafka message (tests build these; the Kafka source delivers RecordBatches)."""

    partition: int
    offset: int
    timestamp_ms: int  # the message's Kafka timestamp: reference for 'too old' / 'in the future'
    key: bytes | None
    value: bytes | None


def batch_of(records: list[Record]) -> RecordBatch:
    """Records of one partition, in offset order, as one batch."""
    return RecordBatch(records[0].partition, [r.offset for r in records], [r.timestamp_ms for r in records],
                       [r.key for r in records], [r.value for r in records])  # fmt: skip


def state_key(partition: int) -> str:
    """The state key of a source partition's windows in build_flow. Bytewax places each key's state on the
    worker its hash names: the keys "0" to "3" all hashed to the second of two workers (py-spy: the first 76%
    idle); "p-0" to "p-3" split two and two. The shipped flow has no keyed step (WindowedSource)."""
    return f"p-{partition}"


def build_flow(
    settings: PipelineSettings,
    source: Source[Any],
    sink: Sink[Item],
    clock: Clock = utc_now,
    convert: Callable[[Any], RecordBatch] | None = None,
    end_offset: EndOffset | None = None,
    partitions: Sequence[int] = (),
) -> Dataflow:
    """The flow over any source of records (the tests' TestingSource: several partitions through one source
    partition): windows in a keyed stateful step, one PartitionLogic per source partition."""
    flow = Dataflow("livedash_aggregate")
    raw = op.input("kafka_in", flow, source)
    batches = raw if convert is None else op.map("to_batch", raw, convert)
    keyed = op.map("key_by_partition", batches, lambda batch: (state_key(batch.partition), batch))
    outs = op.stateful_batch("windows", keyed, lambda state: PartitionLogic(settings, clock, state, end_offset))
    items = op.map("unkey", outs, lambda kv: kv[1])
    op.output("kafka_out", merged(items, settings, partitions, clock) if settings.windows.merge_shards else items, sink)
    return flow
