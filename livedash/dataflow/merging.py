"""One merge shard as Bytewax's stateful batch logic: phase two of the two-phase merge (livedash.pipeline.merge,
docs/architecture.md). Folds the packed ticks of every source partition, publishes one row per window and
group: finals as soon as every partition has closed a window, running values at the publish cadence, and once
no partition has sent a partial for the idle timeout, every change held back (as a quiet partition does without
the merge: sliding windows not yet current show what they hold)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bytewax.operators import StatefulBatchLogic

from livedash.dataflow import heap, metrics
from livedash.dataflow.logic import Clock, collector_paused
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
        self.idle = timedelta(seconds=settings.windows.idle_timeout_s)
        self.next_publish = clock()
        self.last_input = self.next_publish  # the last tick that carried partials (marks alone are not input)

    def on_batch(self, values: list[bytes]) -> tuple[list[OutBatch], bool]:
        now = self.clock()
        for payload in values:
            tick = unpack(payload)
            if tick.partials:
                self.last_input = now
            self.shard.fold(tick)
        return self._publish(now), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        return self.next_publish if self.shard.has_pending() else None

    def on_notify(self) -> tuple[list[OutBatch], bool]:
        return self._publish(self.clock()), StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[OutBatch], bool]:
        return self._publish(self.clock(), flush=True), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        with collector_paused():
            return self.shard.snapshot()

    def _publish(self, now: datetime, flush: bool = False) -> list[OutBatch]:
        self.shard.now_ms = int(now.timestamp() * 1000)
        heap.trim()
        rows = self.shard.publish(flush or now - self.last_input >= self.idle)
        if now >= self.next_publish:
            self.next_publish = now + self.every
        if not rows:
            return []
        metrics.MERGED_ROWS_OUT.inc(len(rows))
        return [OutBatch([Out(row.role, row.key, row.value) for row in rows])]
