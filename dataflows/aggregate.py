"""The aggregation dataflow: raw events -> validated -> per-partition event-time windows -> Kafka.

Run it (recovery snapshots on; see docs/operations.md for the recovery directory):

    python -m bytewax.run dataflows.aggregate:flow -r .livedash/recovery/v5 -s 5 -b 0

Steps: `kafka_in` (WindowedSource: each partition of the raw topic is read and windowed in one place, by one
`PartitionLogic`: parse and validate, fold into panes, publish running values every `publish_every_s`, final
rows when the partition's watermark passes a window's end plus the allowed lateness; its snapshot holds the
offset and the windows together) -> `kafka_out` (aggregates, dead-letter and late topics, every delivery
checked). build_flow is the same logic behind a keyed stateful step, for sources that mix partitions (tests).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, runtime_checkable

import bytewax.operators as op
import msgspec
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, Source, StatefulSourcePartition
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from dataflows import metrics
from dataflows.metrics import EndOffset, EndOffsets
from livedash.kafka_source import RecordBatch
from livedash.pipeline.contract import Validator
from livedash.pipeline.dedup import Dedup
from livedash.pipeline.marker import MARKER_KEY, marker_value, parse_marker
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windowing import PartitionWindows

Clock = Callable[[], datetime]
log = logging.getLogger("livedash.dataflow")
# Cyclic GC generation thresholds: a Kafka batch allocates ~10,000 GC-tracked message objects, so at Python's
# default (700) every batch ran ~14 young collections and, every few batches, a full one over all the windows'
# state: 8% of a process's CPU (gc.callbacks over 3 million events). Batches free their objects by reference
# count; only the windows' retired panes form cycles, which a pass per 50,000 net allocations still frees.
GC_THRESHOLDS = (50_000, 20, 100)
MARKER_RETRY = timedelta(seconds=5)  # a watermark marker not read back by then is proposed again


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
    """A message for the sink: `role` names the topic (aggregates, history, dead_letter, late, marker: the raw
    topic)."""

    role: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    partition: int | None = None  # None: by key; markers go back to the partition they are for


class ValidEvents(NamedTuple):
    """The valid events of one batch, normalized, for the valid topic: into the partition of their raw
    messages, with their keys (the events_raw table reads them; docs/architecture.md)."""

    partition: int
    keys: list[bytes | None]
    values: list[bytes]

    @property
    def role(self) -> str:
        return "valid"


Item = Out | ValidEvents  # what the sink receives


class PartitionLogic(StatefulBatchLogic[RecordBatch, Item, dict[str, Any]]):
    """Bytewax glue around PartitionWindows: validation, dead letters, duplicates, late events, the valid
    events, publish cadence."""

    def __init__(
        self,
        settings: PipelineSettings,
        clock: Clock,
        state: dict[str, Any] | None,
        end_offset: EndOffset | None = None,
        valid_end: EndOffset | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.end_offset = end_offset
        # The valid topic's end offset per partition: after a crash, how many of the valid events a replay
        # re-derives are there already (see _publish_valid).
        self.valid_end = valid_end
        self.last_offset = -1
        self.validator = Validator(settings.events)
        self.encode = msgspec.json.Encoder().encode
        self.publish_valid = settings.topics.valid is not None
        self.valid_published = 0  # valid events this partition has put into the valid topic, ever
        self.valid_skip: int | None = None  # how many of the next ones are there already (None: not asked yet)
        dedup = settings.dedup
        self.dedup = Dedup(dedup.horizon_s, dedup.max_ids)
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
            self.dedup = Dedup.restore(dedup.horizon_s, dedup.max_ids, state["dedup"])
            self.valid_published = state["valid_published"]
            metrics.DUPLICATES.labels(str(self.partition)).inc(self.dedup.dropped)  # the count survives restarts
            log.info("partition %s restored from snapshot: %s events folded in, watermark %s",
                     self.partition, self.windows.events_in, self.windows.watermark)  # fmt: skip
        now = clock()
        self.last_input = now
        self.next_publish = now
        self.marker_due = now  # when a watermark marker may be proposed (see _propose_marker)

    def on_batch(self, values: list[RecordBatch]) -> tuple[list[Item], bool]:
        out: list[Item] = []
        if self.windows is None:
            self.partition = values[0].partition
            self.windows = PartitionWindows(self.settings, self.partition)
        n = 0
        self.windows.now_ms = int(self.clock().timestamp() * 1000)
        for batch in values:
            if MARKER_KEY in batch.keys:  # rare: only a quiet partition gets markers
                for part, marker in _split_at_markers(batch):
                    if len(part):
                        n += self._events(part, out)
                    if marker is not None:
                        self._marker(batch, marker, out)
            else:
                n += self._events(batch, out)
            self.last_offset = batch.offsets[-1]
        if n:
            metrics.EVENTS_IN.labels(str(self.partition)).inc(n)
            self.last_input = self.clock()  # markers are not input: they must not keep a partition 'busy'
        now = self.clock()
        if now >= self.next_publish:
            out.extend(self._publish(now))
        else:
            self._lag()  # every batch, not only every publish: a catch-up shorter than a publish still shows
        return out, StatefulBatchLogic.RETAIN

    def _events(self, batch: RecordBatch, out: list[Item]) -> int:
        """Fold one run of messages (no markers) in: dead letters, late events, corrections and the valid events
        go to out; duplicates are dropped."""
        assert self.windows is not None
        events, indices, invalid = self.validator.parse_batch(batch.values, batch.timestamps)
        for i, reason in invalid:
            out.append(self._dead_letter(batch, i, reason))
        events, indices, dropped = self.dedup.filter(events, indices, self.windows.watermark)
        offsets = batch.offsets
        whole = not invalid and not dropped  # every message is a kept event: the batch's own columns serve
        corrections, late = self.windows.add_batch(events, offsets if whole else [offsets[i] for i in indices])
        label = str(self.partition)
        if invalid:
            self.dead_letters += len(invalid)
            metrics.DEAD_LETTERED.labels(label).inc(len(invalid))
        if dropped:
            metrics.DUPLICATES.labels(label).inc(dropped)
        if self.dedup.enabled:
            metrics.DEDUP_IDS.labels(label).set(len(self.dedup.seen))
        if self.publish_valid and events:
            self._publish_valid(events, batch.keys if whole else [batch.keys[i] for i in indices], out)
        if late:
            metrics.LATE.labels(label).inc(len(late))
            where = {offset: i for i, offset in enumerate(offsets)}
            for marker in late:
                i = where[marker.offset]
                out.append(Out("late", batch.keys[i], batch.values[i] or b"", _headers(batch, i, marker.reason)))
            out.extend(Out(row.role, row.key, row.value) for row in corrections)
        self.input_watermark = self.windows.watermark
        return len(batch)

    def _publish_valid(self, events: list[Any], keys: list[bytes | None], out: list[Item]) -> None:
        """The kept events, normalized, to the valid topic, exactly once: a replay after a crash re-derives the
        same valid events in the same order, and the topic's end offset says how many of them the crashed run
        had already written (only this partition's logic writes that partition)."""
        assert self.partition is not None
        if self.valid_skip is None:
            end = self.valid_end(self.partition) if self.valid_end is not None else None
            self.valid_skip = max(0, (end or 0) - self.valid_published)
            if self.valid_skip:
                log.info("partition %s: %s valid events already in the valid topic; not written again",
                         self.partition, self.valid_skip)  # fmt: skip
        n = len(events)
        self.valid_published += n
        skip = min(self.valid_skip, n)
        if skip:
            self.valid_skip -= skip
            if skip == n:
                return
            events, keys = events[skip:], keys[skip:]
        out.append(ValidEvents(self.partition, keys, list(map(self.encode, events))))

    def _marker(self, batch: RecordBatch, i: int, out: list[Item]) -> None:
        """A watermark marker read back from the partition: the advance happens here, at its offset."""
        assert self.windows is not None
        watermark = parse_marker(batch.values[i])
        if watermark is None:
            out.append(self._dead_letter(batch, i, "invalid watermark marker (reserved key)"))
            self.dead_letters += 1
            metrics.DEAD_LETTERED.labels(str(self.partition)).inc()
            return
        self.windows.advance_idle(watermark)
        if self.windows.watermark is not None:
            self.dedup.advance(self.windows.watermark)
        self.marker_due = self.clock()  # read back: the next one may be proposed at once

    def on_notify(self) -> tuple[list[Item], bool]:
        now = self.clock()
        quiet = self.windows is not None and now - self.last_input >= self.idle
        out: list[Item] = []
        if quiet:
            out.extend(self._propose_marker(now))
        # Quiet: nothing churns any more, so sliding windows that are not current yet show what they hold now.
        out.extend(self._publish(now, flush=quiet))
        return out, StatefulBatchLogic.RETAIN

    def _propose_marker(self, now: datetime) -> list[Item]:
        """Quiet partition: event time follows the clock from the last input on, after the idle timeout, so
        its windows close. Measured from the input's watermark, not the advanced one (no run-away), and only
        proposed: the marker goes into the partition and takes effect when read back (see marker.py)."""
        windows, partition = self.windows, self.partition
        if windows is None or partition is None or windows.watermark is None or self.input_watermark is None:
            return []
        idle_ms = int((now - self.last_input - self.idle) / timedelta(milliseconds=1))
        target = self.input_watermark + idle_ms
        if idle_ms <= 0 or target <= windows.watermark or target < windows.next_close or now < self.marker_due:
            return []  # nothing would close yet, or the last proposal is still on its way
        self.marker_due = now + MARKER_RETRY
        return [Out("marker", MARKER_KEY, marker_value(partition, target), partition=partition)]

    def notify_at(self) -> datetime | None:
        if self.windows is None or not self.windows.has_open_windows():
            return None  # nothing to publish or close: an idle key costs nothing
        return self.next_publish

    def on_eof(self) -> tuple[list[Item], bool]:
        return self._publish(self.clock(), flush=True), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        assert self.windows is not None and self.partition is not None
        return {"partition": self.partition, "dead_letters": self.dead_letters, "windows": self.windows.snapshot(),
                "input_watermark": self.input_watermark, "dedup": self.dedup.snapshot(),
                "valid_published": self.valid_published}  # fmt: skip

    def _publish(self, now: datetime, flush: bool = False) -> list[Item]:
        self.next_publish = now + self.every
        if self.windows is None:
            return []
        self.windows.now_ms = int(now.timestamp() * 1000)
        label = str(self.partition)
        lag = self._lag()
        catching_up = lag is not None and lag > self.settings.windows.provisional_max_lag
        out = [Out(row.role, row.key, row.value) for row in self.windows.publish(flush, provisional=not catching_up)]
        metrics.ROWS_OUT.labels(label).inc(len(out))
        if self.windows.watermark is not None:
            metrics.WATERMARK_DELAY.labels(label).set(now.timestamp() - self.windows.watermark / 1000)
        return out

    def resumed_at(self, partition: int, next_offset: int) -> None:
        """Resumed from a snapshot whose reader goes on at next_offset: the backlog shows as lag at once, before
        the first batch (a short catch-up may be over before the first scrape)."""
        self.partition = partition
        self.last_offset = next_offset - 1
        self._lag()

    def _lag(self) -> int | None:
        """Messages behind the partition's end (the end offset is cached up to a second), set on the gauges."""
        if self.partition is None:
            return None
        label = str(self.partition)
        metrics.PROCESSED_OFFSET.labels(label).set(self.last_offset)
        end = self.end_offset(self.partition) if self.end_offset is not None else None
        if end is None:
            return None
        lag = max(0, end - 1 - self.last_offset)
        metrics.CONSUMER_LAG.labels(label).set(lag)
        return lag

    def _dead_letter(self, batch: RecordBatch, i: int, reason: str) -> Out:
        return Out("dead_letter", batch.keys[i], batch.values[i] or b"", _headers(batch, i, reason))


def _split_at_markers(batch: RecordBatch) -> list[tuple[RecordBatch, int | None]]:
    """The batch cut at its markers: (messages before the marker, the marker's index in batch), in order."""
    parts: list[tuple[RecordBatch, int | None]] = []
    start = 0
    for i, key in enumerate(batch.keys):
        if key == MARKER_KEY:
            parts.append((_slice(batch, start, i), i))
            start = i + 1
    if start < len(batch):
        parts.append((_slice(batch, start, len(batch)), None))
    return parts


def _slice(batch: RecordBatch, a: int, b: int) -> RecordBatch:
    return RecordBatch(batch.partition, batch.offsets[a:b], batch.timestamps[a:b], batch.keys[a:b],
                       batch.values[a:b])  # fmt: skip


def _headers(batch: RecordBatch, i: int, reason: str) -> tuple[tuple[str, bytes], ...]:
    return (
        ("livedash.reason", reason.encode()),
        ("livedash.source.partition", str(batch.partition).encode()),
        ("livedash.source.offset", str(batch.offsets[i]).encode()),
    )


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
) -> Dataflow:
    """The flow over any source of records (the tests' TestingSource: several partitions through one source
    partition): windows in a keyed stateful step, one PartitionLogic per source partition."""
    flow = Dataflow("livedash_aggregate")
    raw = op.input("kafka_in", flow, source)
    batches = raw if convert is None else op.map("to_batch", raw, convert)
    keyed = op.map("key_by_partition", batches, lambda batch: (state_key(batch.partition), batch))
    outs = op.stateful_batch("windows", keyed, lambda state: PartitionLogic(settings, clock, state, end_offset))
    op.output("kafka_out", op.map("unkey", outs, lambda kv: kv[1]), sink)
    return flow


@runtime_checkable
class Positioned(Protocol):
    """A partition reader that knows its Kafka partition and the next offset it reads (the Kafka source's)."""

    partition: int
    next_offset: int


class WindowedPartition(StatefulSourcePartition[Item, dict[str, Any]]):
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

    def next_batch(self) -> list[Item]:
        if self.ended:
            raise StopIteration
        try:
            batches = self.reader.next_batch()
        except StopIteration:
            self.ended = True
            return self.logic.on_eof()[0]  # publishes nothing for a partition that never had input
        if batches:
            return self.logic.on_batch(batches)[0]
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


class WindowedSource(FixedPartitionedSource[Item, dict[str, Any]]):
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
        if resume_state is not None and isinstance(reader, Positioned):
            logic.resumed_at(reader.partition, reader.next_offset)
        return WindowedPartition(reader, logic, self.clock)


def build_windowed_flow(source: WindowedSource, sink: Sink[Item]) -> Dataflow:
    """The shipped flow: `kafka_in` (read and windowed per partition) -> `kafka_out`. No exchange between
    workers: each process writes what its own partitions produce."""
    flow = Dataflow("livedash_aggregate")
    op.output("kafka_out", op.input("kafka_in", flow, source), sink)
    return flow


def tune_gc() -> None:
    """Objects alive now (modules, settings, clients) are permanent: full collections skip them. Then the
    thresholds above."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _kafka_flow() -> Dataflow:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from livedash import config
    from livedash.kafka_sink import TopicSink
    from livedash.kafka_source import KafkaBatchSource

    settings = config.load()
    topics = settings.pipeline.topics
    bootstrap = settings.kafka.bootstrap
    valid_end = EndOffsets(bootstrap, topics.valid) if topics.valid is not None else None
    source = WindowedSource(KafkaBatchSource(bootstrap, topics.raw), settings.pipeline,
                            end_offset=EndOffsets(bootstrap, topics.raw), valid_end=valid_end)  # fmt: skip
    roles = {
        "aggregates": topics.aggregates,
        "history": topics.history,
        "dead_letter": topics.dead_letter,
        "late": topics.late,
        "marker": topics.raw,
    }
    sink = TopicSink(bootstrap, {**roles, "valid": topics.valid} if topics.valid is not None else roles)
    tune_gc()
    return build_windowed_flow(source, sink)


def __getattr__(name: str) -> Any:
    # `python -m bytewax.run dataflows.aggregate:flow` builds the Kafka flow on first access only, so tests can
    # import this module without a config or a broker.
    if name == "flow":
        return _kafka_flow()
    raise AttributeError(name)
