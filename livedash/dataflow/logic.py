"""One source partition's processing, as Bytewax's stateful batch logic: parse and validate, dead letters,
duplicates, late events, the valid events, windows, publish cadence (docs/architecture.md)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
from bytewax.operators import StatefulBatchLogic

from livedash.dataflow import heap, metrics
from livedash.dataflow.routing import shard_key
from livedash.kafka.messages import Item, Out, ValidEvents
from livedash.kafka.offsets import EndOffset
from livedash.kafka.source import RecordBatch
from livedash.pipeline.contract import Validator
from livedash.pipeline.dedup import Dedup
from livedash.pipeline.marker import MARKER_KEY, marker_value, parse_marker
from livedash.pipeline.merge import pack, split
from livedash.pipeline.settings import PipelineSettings
from livedash.pipeline.windows import PartitionWindows

Clock = Callable[[], datetime]
log = logging.getLogger("livedash.dataflow")
MARKER_RETRY = timedelta(seconds=5)  # a watermark marker not read back by then is proposed again


def utc_now() -> datetime:
    return datetime.now(UTC)


class ShardTick(NamedTuple):
    """One partition's tick for one merge shard (livedash.pipeline.merge), packed: (key, value) as Bytewax's
    keyed steps take them."""

    shard: str
    payload: bytes


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic collector off while a snapshot is built: it allocates hundreds of thousands of objects, none in
    a cycle (reference counts free them once Bytewax has pickled them), and with the collector on they set off
    collections over the whole state: two thirds of the snapshot's CPU (bench.memory, 1.8 s against 0.5 s)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


class PartitionLogic(StatefulBatchLogic[RecordBatch, Item | ShardTick, dict[str, Any]]):
    """Bytewax glue around PartitionWindows: validation, dead letters, duplicates, late events, the valid
    events, publish cadence. With windows.merge_shards, phase one of the two-phase merge: each publish sends
    the merge shards what the partition's groups gained (ShardTicks) instead of rows."""

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
        self.shards = settings.windows.merge_shards
        self.shard_keys = [shard_key(i) for i in range(self.shards)]
        self.rollup_names = [r.name for r in settings.rollups]
        self.sent: list[tuple[Any, ...] | None] = [None] * self.shards  # per shard: the watermarks it last got
        self.windows: PartitionWindows | None = None
        self.input_watermark: int | None = None  # the watermark as the input left it (before idle advances)
        self.partition: int | None = None
        self.dead_letters = 0
        if state is not None:
            self.partition = state["partition"]
            self.dead_letters = state["dead_letters"]
            self.windows = PartitionWindows.restore(settings, state["partition"], state["windows"],
                                                    partials=self.shards > 0)  # fmt: skip
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

    def start(self, partition: int) -> None:
        """The partition is known before its first batch (the Kafka reader knows it): with the merge, a
        partition that never has input must still tell the shards how far it has closed (see
        _propose_marker), or no window would ever be final."""
        if self.windows is None:
            self.partition = partition
            self.windows = PartitionWindows(self.settings, partition, partials=self.shards > 0)

    def on_batch(self, values: list[RecordBatch]) -> tuple[list[Item | ShardTick], bool]:
        out: list[Item | ShardTick] = []
        if self.windows is None:
            self.start(values[0].partition)
        assert self.windows is not None
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

    def _events(self, batch: RecordBatch, out: list[Item | ShardTick]) -> int:
        """Fold one run of messages (no markers) in: dead letters, late events and the valid events go to out
        (late events' corrections with the next publish); duplicates are dropped."""
        assert self.windows is not None
        events, indices, invalid = self.validator.parse_batch(batch.values, batch.timestamps)
        for i, reason in invalid:
            out.append(self._dead_letter(batch, i, reason))
        events, kept_at, dropped = self.dedup.filter(events, indices, self.windows.watermark)
        offsets = batch.offsets
        whole = not invalid and not dropped  # every message is a kept event: the batch's own columns serve
        late = self.windows.add_batch(events, offsets if whole else [offsets[i] for i in kept_at])
        label = str(self.partition)
        if invalid:
            self.dead_letters += len(invalid)
            metrics.DEAD_LETTERED.labels(label).inc(len(invalid))
        if dropped:
            metrics.DUPLICATES.labels(label).inc(dropped)
        if self.dedup.enabled:
            metrics.DEDUP_IDS.labels(label).set(self.dedup.remembered)
        if self.publish_valid and events:
            self._publish_valid(events, batch.keys if whole else [batch.keys[i] for i in kept_at], out)
        if late:
            metrics.LATE.labels(label).inc(len(late))
            where = {offset: i for i, offset in enumerate(offsets)}
            for marker in late:
                i = where[marker.offset]
                out.append(Out("late", batch.keys[i], batch.values[i] or b"", _headers(batch, i, marker.reason)))
        self.input_watermark = self.windows.watermark
        return len(batch)

    def _publish_valid(self, events: list[Any], keys: list[bytes | None], out: list[Item | ShardTick]) -> None:
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

    def _marker(self, batch: RecordBatch, i: int, out: list[Item | ShardTick]) -> None:
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

    def on_notify(self) -> tuple[list[Item | ShardTick], bool]:
        now = self.clock()
        quiet = self.windows is not None and now - self.last_input >= self.idle
        out: list[Item | ShardTick] = []
        if quiet:
            out.extend(self._propose_marker(now))
        # Quiet: nothing churns any more, so sliding windows that are not current yet show what they hold now.
        out.extend(self._publish(now, flush=quiet))
        return out, StatefulBatchLogic.RETAIN

    def _propose_marker(self, now: datetime) -> list[Item | ShardTick]:
        """Quiet partition: event time follows the clock from the last input on, after the idle timeout, so
        its windows close. Measured from the input's watermark, not the advanced one (no run-away), and only
        proposed: the marker goes into the partition and takes effect when read back (see marker.py). With the
        merge, a partition that never had input proposes the clock minus the idle timeout: the shards wait for
        every partition's closed_upto."""
        windows, partition = self.windows, self.partition
        if windows is None or partition is None:
            return []
        idle_ms = int((now - self.last_input - self.idle) / timedelta(milliseconds=1))
        if self.input_watermark is not None and windows.watermark is not None:
            target = self.input_watermark + idle_ms
            if target <= windows.watermark or target < windows.next_close:
                return []  # nothing would close yet
        elif self.shards and self.input_watermark is None:
            target = int((now - self.idle).timestamp() * 1000)
            if windows.watermark is not None and (target <= windows.watermark or target < windows.next_close):
                return []
        else:
            return []
        if idle_ms <= 0 or now < self.marker_due:
            return []  # not idle yet, or the last proposal is still on its way
        self.marker_due = now + MARKER_RETRY
        return [Out("marker", MARKER_KEY, marker_value(partition, target), partition=partition)]

    def notify_at(self) -> datetime | None:
        if self.windows is None:
            return None
        if not self.shards and not self.windows.has_open_windows():
            return None  # nothing to publish or close: an idle key costs nothing
        return self.next_publish  # with the merge, a quiet partition's closed_upto must still reach the shards

    def on_eof(self) -> tuple[list[Item | ShardTick], bool]:
        return self._publish(self.clock(), flush=True), StatefulBatchLogic.RETAIN

    def snapshot(self) -> dict[str, Any]:
        assert self.windows is not None and self.partition is not None
        with collector_paused():
            return {"partition": self.partition, "dead_letters": self.dead_letters,
                    "windows": self.windows.snapshot(), "input_watermark": self.input_watermark,
                    "dedup": self.dedup.snapshot(), "valid_published": self.valid_published}  # fmt: skip

    def _publish(self, now: datetime, flush: bool = False) -> list[Item | ShardTick]:
        self.next_publish = now + self.every
        heap.trim()
        if self.windows is None:
            return []
        self.windows.now_ms = int(now.timestamp() * 1000)
        label = str(self.partition)
        lag = self._lag()
        out: list[Item | ShardTick]
        if self.shards:
            out = self._ticks(flush)
            late = self.windows.late_rows(flush)  # corrections stay per partition: the merge keeps no closed window
            out.extend(Out(row.role, row.key, row.value) for row in late)
            metrics.ROWS_OUT.labels(label).inc(len(late))
        else:
            catching_up = lag is not None and lag > self.settings.windows.provisional_max_lag
            out = [Out(row.role, row.key, row.value) for row in self.windows.publish(flush, not catching_up)]
            metrics.ROWS_OUT.labels(label).inc(len(out))
        if self.windows.watermark is not None:
            metrics.WATERMARK_DELAY.labels(label).set(now.timestamp() - self.windows.watermark / 1000)
        return out

    def _ticks(self, flush: bool = False) -> list[Item | ShardTick]:
        """What the groups gained since the last tick, one packed tick per shard; a shard whose tick would
        hold no partial and no new watermark gets none (after a restore, each gets one)."""
        assert self.windows is not None
        whole = self.windows.partials(flush)
        out: list[Item | ShardTick] = []
        for i, tick in enumerate(split(whole, self.rollup_names, self.shards)):
            marks = (tick.watermark, *tick.closed_upto)
            if tick.partials or marks != self.sent[i]:
                self.sent[i] = marks
                out.append(ShardTick(self.shard_keys[i], pack(tick)))
        metrics.PARTIALS_OUT.labels(str(self.partition)).inc(len(whole.partials))
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
