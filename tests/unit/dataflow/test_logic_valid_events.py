"""The dataflow's valid events (what the events_raw table reads) and duplicates, on fixed clocks. No servers."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
from prometheus_client import REGISTRY

from livedash.dataflow.logic import PartitionLogic
from livedash.kafka.messages import Out, ValidEvents
from tests.dataflow_runs import BASE, InputClock, event, records, settings
from tests.dataflow_scaffold import Record, batch_of


def valid(out: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(v) for o in out if isinstance(o, ValidEvents) for v in o.values]


def counted(out: list[Any]) -> int:
    """Events in the provisional rows of the 10 s roll-up (the newest version of each group)."""
    newest: dict[str, dict[str, Any]] = {}
    for o in out:
        if isinstance(o, Out) and o.role == "live":
            row = orjson.loads(o.value)
            if (
                row["rollup_name"] == "tumble_10s"
                and row["version"] >= newest.get(row["pk"], {"version": -1})["version"]
            ):
                newest[row["pk"]] = row
    return sum(row["event_count"] for row in newest.values())


def duplicates_metric(partition: int) -> float:
    return REGISTRY.get_sample_value("livedash_events_duplicate_total", {"partition": str(partition)}) or 0.0


def test_valid_events_are_the_counted_ones_normalized_in_their_partition_with_their_keys() -> None:
    logic = PartitionLogic(settings(), InputClock(), None)
    msgs = [
        Record(2, 0, BASE, b"u1", event(BASE, user="u1")),
        Record(2, 1, BASE, b"u1", b"not json"),
        Record(2, 2, BASE, b"u2", b'\xef\xbb\xbf{"event_id":"n","ts":%d,"type":"view","user_id":"u2","country":null}'
               % BASE),
        Record(2, 3, BASE, b"u3", event(BASE, kind="swipe")),  # an undeclared type: dead-lettered
    ]  # fmt: skip
    out = logic.on_batch([batch_of(msgs)])[0]
    out += logic.on_eof()[0]
    (batch,) = [o for o in out if isinstance(o, ValidEvents)]
    assert batch.partition == 2 and batch.keys == [b"u1", b"u2"]
    assert valid(out) == [
        {"event_id": f"e{BASE}-u1", "ts": BASE, "type": "click", "user_id": "u1", "country": "DE", "latency_ms": 10.0},
        {"event_id": "n", "ts": BASE, "type": "view", "user_id": "u2", "country": "__none__", "latency_ms": None},
    ]
    assert counted(out) == 2
    assert sum(1 for o in out if isinstance(o, Out) and o.role == "dead_letter") == 2


def test_a_duplicate_is_counted_once_published_once_and_on_the_metric_across_a_restore() -> None:
    cfg, clock = settings(), InputClock()
    before = duplicates_metric(5)
    logic = PartitionLogic(cfg, clock, None)
    first = [Record(5, i, BASE + i, b"u", event(BASE + i, user=f"u{i}")) for i in range(4)]
    out = logic.on_batch([batch_of(first)])[0]
    again = [Record(5, 4 + i, BASE + 5_000, b"u", event(BASE + i, user=f"u{i}")) for i in (0, 2)]  # resent
    out += logic.on_batch([batch_of(again)])[0]
    assert duplicates_metric(5) - before == 2
    state = pickle.loads(pickle.dumps(logic.snapshot()))
    resumed = PartitionLogic(cfg, clock, state)  # a restart: the counter comes back from the snapshot
    assert duplicates_metric(5) - before == 4  # (one process: both instances count into one registry)
    more = [Record(5, 6, BASE + 6_000, b"u", event(BASE + 3, user="u3")), Record(5, 7, BASE + 6_000, b"u",
                                                                               event(BASE + 7, user="u7"))]  # fmt: skip
    out += resumed.on_batch([batch_of(more)])[0]
    out += resumed.on_eof()[0]
    assert resumed.dedup.dropped == 3
    assert [e["user_id"] for e in valid(out)] == ["u0", "u1", "u2", "u3", "u7"]
    assert counted(out) == 5


def test_a_replay_after_a_crash_skips_the_valid_events_already_written() -> None:
    """The crashed run wrote 3 valid events after its last snapshot; the replay derives them again and writes
    only what comes after, so the valid topic holds each event once."""
    cfg, clock = settings(), InputClock()
    logic = PartitionLogic(cfg, clock, None, valid_end=lambda p: 0)
    msgs = [Record(1, i, BASE + i, b"k", event(BASE + i, user=f"u{i}")) for i in range(8)]
    out = logic.on_batch([batch_of(msgs[:2])])[0]
    snap = pickle.loads(pickle.dumps(logic.snapshot()))  # 2 valid events published
    out += logic.on_batch([batch_of(msgs[2:5])])[0]  # 3 more reach the topic, then the process dies
    written = valid(out)
    replay = PartitionLogic(cfg, clock, snap, valid_end=lambda p: len(written))
    out2 = replay.on_batch([batch_of(msgs[2:4])])[0] + replay.on_batch([batch_of(msgs[4:])])[0]
    assert [e["user_id"] for e in written + valid(out2)] == [f"u{i}" for i in range(8)]


def test_no_valid_events_when_the_topic_is_switched_off() -> None:
    cfg = settings()
    cfg = cfg.model_copy(update={"topics": cfg.topics.model_copy(update={"valid": None})})
    out = PartitionLogic(cfg, InputClock(), None).on_batch([batch_of(records([(BASE, event(BASE))]))])[0]
    assert not valid(out) and any(isinstance(o, Out) and o.role == "live" for o in out)
