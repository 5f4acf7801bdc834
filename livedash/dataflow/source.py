"""The shipped dataflow's source: each Kafka partition read and windowed in one place, its snapshot holding the
offset and the windows together."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from livedash.dataflow.logic import Clock, PartitionLogic, ShardTick, utc_now
from livedash.kafka.messages import Item
from livedash.kafka.offsets import EndOffset
from livedash.kafka.source import RecordBatch
from livedash.pipeline.settings import PipelineSettings

# The format of the dataflow's snapshots (this source's state: offsets and windows). Bump it when either changes:
# the managed dataflow's recovery directory is named after it (see docs/operations.md).
# 4: windows kept in the source partition with its offset (WindowedSource)
# 5: rows keyed by a digest of their key; the duplicate ids and the count of valid events published
# 6: the merge shards' state beside the partitions' (windows.merge_shards; the recovery directory names the
#    shard count too, since a shard's state lives under its key)
# 7: late corrections per block of the watermark (windows.late_block_s): the current block's groups
# 8: the cascade's open derived windows (livedash.pipeline.cascade), in the merge shards or the partitions; later
#    each pane as one msgpack buffer (pack_state): the restoring code reads both forms, so v8 stayed
STATE_FORMAT = 8


def recovery_name(settings: PipelineSettings) -> str:
    """The managed dataflow's recovery directory name: the state format, the merge shard count if any, and a
    digest of the roll-ups (a snapshot holds each roll-up's windows in order: one taken with other roll-ups
    cannot be restored, and a new directory re-reads the raw topic from its start instead)."""
    shards = settings.windows.merge_shards
    rollups = orjson.dumps([r.model_dump(mode="json") for r in settings.rollups], option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(rollups).hexdigest()[:8]
    return f"v{STATE_FORMAT}-merge{shards}-{digest}" if shards else f"v{STATE_FORMAT}-{digest}"


@runtime_checkable
class Positioned(Protocol):
    """A partition reader that knows its Kafka partition and the next offset it reads (the Kafka source's)."""

    partition: int
    next_offset: int


class WindowedPartition(StatefulSourcePartition[Item | ShardTick, dict[str, Any]]):
    """A source partition read and windowed in one place: the reader's batches go straight into this
    partition's PartitionLogic, and the snapshot holds the offset and the windows together.

    Why: a keyed stateful step lives on the worker its key hashes to, not on the worker that reads the
    partition, so with several processes batches crossed between them (a pickle of about 3 MB per batch, and
    a worker waiting on another). Here nothing leaves the worker until the sink. The same PartitionLogic as
    build_flow's, called the same way: on_batch per batch, on_notify when nothing arrives and it is due."""

    def __init__(self, reader: StatefulSourcePartition[RecordBatch, Any], logic: PartitionLogic, clock: Clock) -> None:
        self.reader = reader
        self.logic = logic
        self.clock = clock
        self.ended = False

    def next_batch(self) -> list[Item | ShardTick]:
        if self.ended:
            raise StopIteration
        try:
            batches = self.reader.next_batch()
        except StopIteration:
            self.ended = True
            return self.logic.on_eof()[0]  # publishes nothing for a partition that never had input
        if batches:
            return self.logic.on_batch(list(batches))[0]
        due = self.logic.notify_at()
        if due is not None and self.clock() >= due:
            return self.logic.on_notify()[0]
        return []

    def next_awake(self) -> datetime | None:
        awake = self.reader.next_awake()
        if awake is None:
            return None  # input is flowing: read again at once
        due = self.logic.notify_at()
        return awake if due is None else min(awake, due)

    def snapshot(self) -> dict[str, Any]:
        logic = self.logic.snapshot() if self.logic.windows is not None else None
        return {"offset": self.reader.snapshot(), "logic": logic}

    def close(self) -> None:
        self.reader.close()


class WindowedSource(FixedPartitionedSource[Item | ShardTick, dict[str, Any]]):
    """Every partition of a partitioned source of RecordBatches (Kafka), each windowed where it is read."""

    def __init__(
        self,
        batches: FixedPartitionedSource[RecordBatch, Any],
        settings: PipelineSettings,
        clock: Clock = utc_now,
        end_offset: EndOffset | None = None,
        valid_end: EndOffset | None = None,
    ) -> None:
        self.batches = batches
        self.settings = settings
        self.clock = clock
        self.end_offset = end_offset
        self.valid_end = valid_end

    def list_parts(self) -> list[str]:
        return self.batches.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: dict[str, Any] | None) -> WindowedPartition:
        state = resume_state or {"offset": None, "logic": None}
        reader = self.batches.build_part(step_id, for_part, state["offset"])
        logic = PartitionLogic(self.settings, self.clock, state["logic"], self.end_offset, self.valid_end)
        if isinstance(reader, Positioned):
            if self.settings.windows.merge_shards:
                logic.start(reader.partition)  # before any input: see PartitionLogic.start
            if resume_state is not None:
                logic.resumed_at(reader.partition, reader.next_offset)
        return WindowedPartition(reader, logic, self.clock)
