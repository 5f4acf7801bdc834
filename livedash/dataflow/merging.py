"""One merge shard as Bytewax's stateful batch logic: phase two of the two-phase merge (livedash.pipeline.merge,
docs/architecture.md). Folds the packed ticks of every source partition, publishes one row per window and
group: finals as soon as every partition has closed a window, running values at the publish cadence."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from livedash.dataflow import metrics
from livedash.dataflow.logic import Clock
from livedash.kafka.messages import Out, OutBatch
from livedash.pipeline.merge import MergeShard, unpack
from livedash.pipeline.settings import PipelineSettings


class MergeLogic(StatefulBatchLogic[bytes, OutBatch, dict[str, Any]]):
    def __init__(self, settings: PipelineSettings, partitions: Sequence[int], clock: Clock,
                 state: dict[str, Any] | None) -> None:  # fmt: skip
        self.clock = clock
        if state is None:
            self.shard = MergeShard(settings, partitions)
        else:
            self.shard = MergeShard.restore(settings, state)
            self.shard.watch(partitions)
        self.every = timedelta(seconds=settings.windows.publish_every_s)
        self.next_publish = clock()

    def on_batch(self, values: list[bytes]) -> tuple[list[OutBatch], bool]:
        for payload in values:
            self.shard.fold(unpack(payload))
        return self._publish(self.clock()), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.next_publish if self.shard.has_pending() else None

    def on_notify(self) -> tuple[list[OutBatch], bool]:
        return self._publish(self.clock()), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[OutBatch], bool]:
        return self._publish(self.clock(), flush=True), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        return self.shard.snapshot()

    def _publish(self, now: datetime, flush: bool = False) -> list[OutBatch]:
        self.shard.now_ms = int(now.timestamp() * 1000)
        rows = self.shard.publish(flush)
        if now >= self.next_publish:
            self.next_publish = now + self.every
        if not rows:
            return []
        metrics.MERGED_ROWS_OUT.inc(len(rows))
        return [OutBatch([Out(row.role, row.key, row.value) for row in rows])]
