"""The aggregation dataflow: raw events -> validated -> per-partition event-time windows -> Kafka.

Run it (recovery snapshots on; see docs/operations.md for the recovery directory):

    python -m bytewax.run dataflows.aggregate:flow -r .livedash/recovery -s 5 -b 0

Steps: `kafka_in` (every partition of the raw topic) -> `key_by_partition` -> `windows` (stateful_batch, one
`PartitionLogic` per source partition: parse and validate, fold into panes, publish running values every
`publish_every_s`, final rows when the partition's watermark passes a window's end plus the allowed lateness)
-> `kafka_out` (aggregates, dead-letter and late topics, every delivery checked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows import metrics
from dataflows.metrics import EndOffset, EndOffsets
from livedash.kafka_source import RecordBatch
from livedash.pipeline.contract import Validator
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windowing import PartitionWindows

Clock = Callable[[], datetime]
log = logging.getLogger("livedash.dataflow")


def utc_now() -> datetime:
    return datetime.now(UTC)


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


class Out(NamedTuple):
    """A message for the sink: `role` names the topic (aggregates, dead_letter, late)."""

    role: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class PartitionLogic(StatefulBatchLogic[RecordBatch, Out, dict[str, Any]]):
    """Bytewax glue around PartitionWindows: validation, dead letters, late events, publish cadence."""

    def __init__(
        self,
        settings: PipelineSettings,
        clock: Clock,
        state: dict[str, Any] | None,
        end_offset: EndOffset | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.end_offset = end_offset
        self.last_offset = -1
        self.validator = Validator(settings.events)
        self.every = timedelta(seconds=settings.windows.publish_every_s)
        self.idle = timedelta(seconds=settings.windows.idle_timeout_s)
        self.windows: PartitionWindows | None = None
        self.input_watermark: int | None = None  # the watermark as the input left it (before idle advances)
        self.partition: int | None = None
        self.dead_letters = 0
        if state is not None:
            self.partition = state["partition"]
            self.dead_letters = state["dead_letters"]
            self.windows = PartitionWindows.restore(settings, state["partition"], state["windows"])
            self.input_watermark = state.get("input_watermark", self.windows.watermark)
            log.info("partition %s restored from snapshot: %s events folded in, watermark %s",
                     self.partition, self.windows.events_in, self.windows.watermark)  # fmt: skip
        now = clock()
        self.last_input = now
        self.next_publish = now

    def on_batch(self, values: list[RecordBatch]) -> tuple[list[Out], bool]:
        out: list[Out] = []
        if self.windows is None:
            self.partition = values[0].partition
            self.windows = PartitionWindows(self.settings, self.partition)
        windows, parse = self.windows, self.validator.parse_batch
        dead = late_n = n = 0
        for batch in values:
            n += len(batch)
            events, indices, invalid = parse(batch.values, batch.timestamps)
            for i, reason in invalid:
                out.append(self._dead_letter(batch, i, reason))
            dead += len(invalid)
            offsets = batch.offsets
            corrections, late = windows.add_batch(events, [offsets[i] for i in indices] if invalid else offsets)
            if late:
                late_n += len(late)
                where = {offset: i for i, offset in enumerate(offsets)}
                for marker in late:
                    i = where[marker.offset]
                    out.append(Out("late", batch.keys[i], batch.values[i] or b"", _headers(batch, i, marker.reason)))
                out.extend(Out("aggregates", row.key, row.value) for row in corrections)
            self.last_offset = offsets[-1]
        self.dead_letters += dead
        self.input_watermark = windows.watermark
        label = str(self.partition)
        metrics.EVENTS_IN.labels(label).inc(n)
        if dead:
            metrics.DEAD_LETTERED.labels(label).inc(dead)
        if late_n:
            metrics.LATE.labels(label).inc(late_n)
        self.last_input = self.clock()
        if self.last_input >= self.next_publish:
            out.extend(self._publish(self.last_input))
        return out, StatefulBatchLogic.RETAIN

    def on_notify(self) -> tuple[list[Out], bool]:
        now = self.clock()
        quiet = self.windows is not None and now - self.last_input >= self.idle
        if quiet and self.windows is not None and self.input_watermark is not None:
            # Quiet partition: event time follows the clock from the last input on (after the idle timeout), so
            # its windows close. Measured from the input's watermark, not the advanced one: no run-away.
            idle_ms = int((now - self.last_input - self.idle) / timedelta(milliseconds=1))
            if idle_ms > 0:
                self.windows.advance_idle(self.input_watermark + idle_ms)
        # Quiet: nothing churns any more, so sliding windows that are not current yet show what they hold now.
        return self._publish(now, flush=quiet), StatefulBatchLogic.RETAIN

    def notify_at(self) -> datetime | None:
        if self.windows is None or not self.windows.has_open_windows():
            return None  # nothing to publish or close: an idle key costs nothing
        return self.next_publish

    def on_eof(self) -> tuple[list[Out], bool]:
        return self._publish(self.clock(), flush=True), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        assert self.windows is not None and self.partition is not None
        return {"partition": self.partition, "dead_letters": self.dead_letters, "windows": self.windows.snapshot(),
                "input_watermark": self.input_watermark}  # fmt: skip

    def _publish(self, now: datetime, flush: bool = False) -> list[Out]:
        self.next_publish = now + self.every
        if self.windows is None:
            return []
        out = [Out("aggregates", row.key, row.value) for row in self.windows.publish(flush)]
        label = str(self.partition)
        metrics.ROWS_OUT.labels(label).inc(len(out))
        metrics.PROCESSED_OFFSET.labels(label).set(self.last_offset)
        if self.windows.watermark is not None:
            metrics.WATERMARK_DELAY.labels(label).set(now.timestamp() - self.windows.watermark / 1000)
        if self.end_offset is not None and self.partition is not None:
            end = self.end_offset(self.partition)
            if end is not None:
                metrics.CONSUMER_LAG.labels(label).set(max(0, end - 1 - self.last_offset))
        return out

    def _dead_letter(self, batch: RecordBatch, i: int, reason: str) -> Out:
        return Out("dead_letter", batch.keys[i], batch.values[i] or b"", _headers(batch, i, reason))


def _headers(batch: RecordBatch, i: int, reason: str) -> tuple[tuple[str, bytes], ...]:
    return (
        ("livedash.reason", reason.encode()),
        ("livedash.source.partition", str(batch.partition).encode()),
        ("livedash.source.offset", str(batch.offsets[i]).encode()),
    )


def build_flow(
    settings: PipelineSettings,
    source: Source[Any],
    sink: Sink[Out],
    clock: Clock = utc_now,
    convert: Callable[[Any], RecordBatch] | None = None,
    end_offset: EndOffset | None = None,
) -> Dataflow:
    flow = Dataflow("livedash_aggregate")
    raw = op.input("kafka_in", flow, source)
    batches = raw if convert is None else op.map("to_batch", raw, convert)
    keyed = op.map("key_by_partition", batches, lambda batch: (str(batch.partition), batch))
    outs = op.stateful_batch("windows", keyed, lambda state: PartitionLogic(settings, clock, state, end_offset))
    op.output("kafka_out", op.map("unkey", outs, lambda kv: kv[1]), sink)
    return flow


def _kafka_flow() -> Dataflow:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from livedash import config
    from livedash.kafka_sink import TopicSink
    from livedash.kafka_source import KafkaBatchSource

    settings = config.load()
    topics = settings.pipeline.topics
    source = KafkaBatchSource(settings.kafka.bootstrap, topics.raw)
    sink = TopicSink(settings.kafka.bootstrap, {"aggregates": topics.aggregates, "dead_letter": topics.dead_letter,
                                                "late": topics.late})  # fmt: skip
    return build_flow(settings.pipeline, source, sink, end_offset=EndOffsets(settings.kafka.bootstrap, topics.raw))


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run dataflows.aggregate:flow` builds the Kafka flow on first access only, so tests can
    # import this module without a config or a broker.
    if name == "flow":
        return _kafka_flow()
    raise AttributeError(name)
