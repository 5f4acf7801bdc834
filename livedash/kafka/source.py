"""A Bytewax source that reads Kafka partitions and emits one item per consumed batch, not per message.

Bytewax 0.21's KafkaSource emits a Python object per message, and every operator then pays per item (about
a third of the dataflow's time per event went there). Here a `RecordBatch` carries the columns of up to
`batch_size` messages of one partition, so the dataflow pays Bytewax's overhead once per batch. Like Bytewax's
source, offsets are kept in the recovery snapshots (the next offset to read, per partition), not in a consumer
group; errors other than end-of-partition and transient broker trouble raise. A partition that stops
fetching while its topic holds more is assigned again (see _PartitionReader.check_stalled).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from operator import is_not, itemgetter
from typing import cast

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from livedash.errors import LivedashError

log = logging.getLogger(__name__)
IDLE_WAIT = timedelta(milliseconds=20)  # how long an empty partition waits before polling again
STALL_S = 10.0  # how long a partition may read nothing before its end offset is asked for (a broker round trip)
_NOT_NONE = partial(is_not, None)
_SECOND = itemgetter(1)
# A consumed message always has an offset (None is for a produced one not yet delivered).
_offset = cast(Callable[[Message], int], Message.offset)


@dataclass(slots=True)
class RecordBatch:
    """Consecutive messages of one partition, as columns."""

    partition: int
    offsets: Sequence[int]  # a range when consecutive (the usual case: no per-message call)
    timestamps: list[int]  # Kafka message timestamps (ms)
    keys: list[bytes | None]
    values: list[bytes | None]

    def __len__(self) -> int:
        return len(self.offsets)


class _PartitionReader(StatefulSourcePartition[RecordBatch, int]):
    def __init__(self, config: dict[str, object], topic: str, partition: int, start: int, batch_size: int,
                 stall_s: float = STALL_S) -> None:  # fmt: skip
        self.config = config
        self.topic = topic
        self.partition = partition
        self.batch_size = batch_size
        self.next_offset = start
        self.stall_s = stall_s
        self.consumer = self._assigned(start)
        self.awake: datetime | None = None
        self.next_check = time.monotonic() + stall_s  # when an idle partition next asks for its end offset
        self.last_read = time.monotonic()
        self.behind: int | None = None  # the end offset a check saw beyond what was read, if nothing came since
        self.reassigned_at: int | None = None  # the end offset when it was last assigned again
        self.reassigned = 0

    def _assigned(self, offset: int) -> Consumer:
        consumer = Consumer(self.config)
        consumer.assign([TopicPartition(self.topic, self.partition, offset)])
        return consumer

    def next_batch(self) -> list[RecordBatch]:
        msgs = self.consumer.consume(self.batch_size, 0)
        if not msgs:
            self.awake = datetime.now(UTC) + IDLE_WAIT
            if time.monotonic() >= self.next_check:
                self.check_stalled()
            return []
        self.awake = None
        self.last_read = time.monotonic()
        self.next_check = self.last_read + self.stall_s
        self.behind = None
        # Columns by map() over the methods: the per-message calls run in C, with no bytecode per message.
        if any(map(_NOT_NONE, map(Message.error, msgs))):
            msgs = [m for m in msgs if not _end_of_partition(m.error())]
            if not msgs:
                return []
        first, last = _offset(msgs[0]), _offset(msgs[-1])
        batch = RecordBatch(
            self.partition,
            # Offsets of one partition only grow, so as many as the span means consecutive (no transaction
            # markers or compacted gaps in between): a range then, instead of one call per message.
            range(first, last + 1) if last - first + 1 == len(msgs) else list(map(_offset, msgs)),
            list(map(_SECOND, map(Message.timestamp, msgs))),
            list(map(Message.key, msgs)),
            list(map(Message.value, msgs)),
        )
        self.next_offset = batch.offsets[-1] + 1
        return [batch]

    def next_awake(self) -> datetime | None:
        return self.awake

    def check_stalled(self) -> None:
        """After a broker restart librdkafka (2.x, with assign() and no group) occasionally leaves a partition
        not fetching while the broker has its messages (seen in a CI run: one of four partitions read nothing
        for 17 minutes after test_kafka_broker_restart_mid_run, lag 4,112; librdkafka issue 5153); a new
        consumer at the same offset reads on. Asked at most once per `stall_s` of reading nothing. The first
        check that sees more on the broker than was read only notes it (a message produced a moment ago may be
        in flight); a second, `stall_s` later with nothing read in between, assigns the partition again. An
        end offset that a reassignment did not get past (a transaction marker, a compacted gap at the tail)
        does not trigger another until it grows."""
        now = time.monotonic()
        self.next_check = now + self.stall_s
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, self.partition),
                                                            timeout=1, cached=False)  # fmt: skip
        except KafkaException:
            return  # the broker is away: librdkafka reconnects by itself, ask again later
        if high <= max(self.next_offset, low) or high == self.reassigned_at:
            self.behind = None
            return
        if self.behind is None:
            self.behind = high
            return
        log.warning("Kafka partition %s of %s: nothing read for %.0f s while the broker held offsets up to %s "
                    "(next to read: %s): assigning it again",
                    self.partition, self.topic, now - self.last_read, self.behind, self.next_offset)  # fmt: skip
        self.consumer.close()
        self.consumer = self._assigned(self.next_offset)
        self.reassigned_at = high
        self.behind = None
        self.reassigned += 1

    def snapshot(self) -> int:
        return self.next_offset

    def close(self) -> None:
        self.consumer.close()


# librdkafka reports these as events while it recovers by itself (a broker restarting, a leader moving): the
# consumer keeps its position and resumes, so they are logged, not raised. Anything else stops the dataflow,
# which resumes from its last snapshot.
_TRANSIENT = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._TIMED_OUT,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
    }
)


def _end_of_partition(err: KafkaError | None) -> bool:
    """True for events to skip (end of partition, transient broker trouble); raises on real errors."""
    if err is None:
        return False
    if err.code() == KafkaError._PARTITION_EOF:
        return True
    if not err.fatal() and (err.code() in _TRANSIENT or err.retriable()):
        log.warning("Kafka consumer: %s (transient; librdkafka retries)", err.str())
        return True
    raise KafkaException(err)


class KafkaBatchSource(FixedPartitionedSource[RecordBatch, int]):
    """Every partition of one topic, from the beginning (or from the snapshot's offset after a resume)."""

    def __init__(self, bootstrap: str, topic: str, batch_size: int = 10_000) -> None:
        self.topic = topic
        self.batch_size = batch_size
        self.config: dict[str, object] = {
            "bootstrap.servers": bootstrap,
            "group.id": "livedash-dataflow-unused",  # required by librdkafka; offsets live in the snapshots
            "enable.auto.commit": False,
            "enable.partition.eof": False,
            # Prefetch per partition consumer: a few 10,000-message batches (about 3 MB each) keep a core busy.
            # On 2 million pre-filled events, 4 partitions: 64 MB fetches and 256 MB queues peaked at 738 MB RSS,
            # these at 493 MB for the same rate (about 313,000 events/s); 4 MB fetches cost a third of the rate.
            "fetch.max.bytes": 8 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
            "queued.max.messages.kbytes": 16 * 1024,
            # Once a partition's queue is past those thresholds, librdkafka (2.x) postpones its next fetch by
            # this, 1,000 ms by default: the queue then ran dry between fetches and reading alone topped out at
            # about 400,000 events/s per process, whatever the CPU. 10 ms: 1,117,672 (bench.floor, 2 million).
            "fetch.queue.backoff.ms": 10,
        }

    def list_parts(self) -> list[str]:
        consumer = Consumer(self.config)
        try:
            meta = consumer.list_topics(self.topic, timeout=10)
        finally:
            consumer.close()
        topic = meta.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise LivedashError(f"Kafka topic {self.topic!r} does not exist: run `livedash apply`")
        return [str(p) for p in sorted(topic.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PartitionReader:
        start = OFFSET_BEGINNING if resume_state is None else resume_state
        return _PartitionReader(self.config, self.topic, int(for_part), start, self.batch_size)
