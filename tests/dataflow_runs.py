"""Runs of the aggregation dataflow on fixed clocks for the unit tests: TestingSource in, TestingSink out,
no servers. The clock is driven by the input: each record's Kafka timestamp sets "now", so publishing cadence,
idle detection and 'too old' checks are deterministic."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import AbortExecution, TestingSink, TestingSource, cluster_main, run_main

from livedash.kafka.messages import Out, OutBatch, ValidEvents
from livedash.kafka.source import RecordBatch
from livedash.pipeline.rows import Row
from livedash.pipeline.settings import PipelineSettings
from tests.dataflow_scaffold import Record, batch_of, build_flow

BASE = 1_800_000_000_000  # a multiple of 10 s, 60 s and 300 s (window boundaries)


LATENESS_S = 5


def settings(**windows: Any) -> PipelineSettings:
    return PipelineSettings.model_validate(
        {
            "events": {
                "types": ["click", "view"],
                "dimensions": {"type": 4, "country": 3},
                "metrics": {"latency_ms": {"min": 0, "max": 10_000}},
            },
            "windows": {"allowed_lateness_s": LATENESS_S, "publish_every_s": 1, "idle_timeout_s": 10, **windows},
            "rollups": [
                {"name": "tumble_10s", "dimensions": ["type", "country"], "window": {"size_s": 10}},
                {"name": "slide_30s", "dimensions": ["type"], "window": {"size_s": 30, "every_s": 10}},
            ],
        }
    )


class InputClock:
    """now() = the Kafka timestamp of the latest record seen by the flow."""

    def __init__(self) -> None:
        self.now = datetime.fromtimestamp(BASE / 1000, UTC)

    def see(self, rec: Record) -> Record:
        self.now = max(self.now, datetime.fromtimestamp(rec.timestamp_ms / 1000, UTC))
        return rec

    def __call__(self) -> datetime:
        return self.now


def event(ts: int, kind: str = "click", country: str = "DE", user: str = "u1", latency: float | None = 10.0) -> bytes:
    obj: dict[str, Any] = {"event_id": f"e{ts}-{user}", "ts": ts, "type": kind, "user_id": user, "country": country}
    if latency is not None:
        obj["latency_ms"] = latency
    return orjson.dumps(obj)


def records(values: list[tuple[int, bytes]], partition: int = 0, first_offset: int = 0) -> list[Record]:
    """(arrival time ms, payload) -> Records with consecutive offsets."""
    return [Record(partition, first_offset + i, at, None, value) for i, (at, value) in enumerate(values)]


def run(cfg: PipelineSettings, recs: list[Record], workers: int = 1, batch_size: int = 1) -> list[Out]:
    clock = InputClock()
    out: list[Out] = []
    flow = build_flow(cfg, TestingSource(recs, batch_size=batch_size), TestingSink(out), clock=clock,
                      convert=lambda rec: batch_of([clock.see(rec)]),
                      partitions=sorted({r.partition for r in recs}))  # fmt: skip
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return out


def valid_events(out: list[Any]) -> dict[int, list[tuple[bytes | None, bytes]]]:
    """Partition -> (key, value) of the valid events published, in order."""
    found: dict[int, list[tuple[bytes | None, bytes]]] = defaultdict(list)
    for o in out:
        if isinstance(o, ValidEvents):
            found[o.partition] += zip(o.keys, o.values, strict=True)
    return dict(found)


def rows(out: list[Any]) -> list[dict[str, Any]]:
    """The recent tier's rows among out, as one table would hold them: its final rows and corrections, and the
    running rows the live table holds (not the final rows copied there). A merge shard's come as OutBatches."""
    flat = [x for o in out for x in (o.outs if isinstance(o, OutBatch) else [o])]
    return [row for role, row in tables(flat) if role in ("aggregates", "live")]


def tables(rows: Iterable[Row | Out]) -> list[tuple[str, dict[str, Any]]]:
    """(role, row) of the aggregate rows as their tiers' tables hold them together: every row but the copies of
    final rows and corrections in the live table (the running rows are there only)."""
    found = [(r.role, orjson.loads(r.value)) for r in rows if r.role in ("aggregates", "history", "live")]
    return [(role, row) for role, row in found if role != "live" or not row["is_final"]]


def finals(out: list[Out], rollup: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    result = {}
    for row in rows(out):
        if row["rollup_name"] == rollup and row["is_final"] and row["kind"] == "window":
            result[(row["window_start"], row["type"], row["country"], row["source_partition"])] = row
    return result


def read_back(out: list[Out], clock: InputClock, offset: int) -> list[RecordBatch]:
    """The watermark markers among out, as the source would deliver them once written to their partition."""
    markers = [o for o in out if o.role == "marker"]
    ms = int(clock.now.timestamp() * 1000)
    return [batch_of([Record(m.partition, offset + i, ms, m.key, m.value)]) for i, m in enumerate(markers)]  # type: ignore[arg-type]


def workload() -> list[Record]:
    out = []
    for p in range(4):
        values = []
        for i in range(300):
            ts = BASE + i * 250 + (p * 37 % 5) * 100
            late = i % 50 == 49
            values.append((ts, event(ts - (20_000 if late else 0), kind="click" if i % 3 else "view",
                                     country=["DE", "FR", "US", "JP"][i % 4], user=f"u{i % 23}",
                                     latency=float(i % 17))))  # fmt: skip
        values.append((BASE + 200_000, event(BASE + 200_000)))
        out += records(values, partition=p)
    return out


def with_invalid(recs: list[Record]) -> list[Record]:
    """Every 97th message replaced by an invalid one, among valid ones."""
    for i in range(0, len(recs), 97):
        recs[i] = Record(recs[i].partition, recs[i].offset, recs[i].timestamp_ms, None, b'{"ts": "soon"')
    return recs


SKETCHES = ("distinct_theta", "quantile_tdigest")


def strip_sketches(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in SKETCHES}


def final_state(out: list[Out]) -> dict[str, tuple[int, dict[str, Any]]]:
    """What Pinot would keep: per key the row with the highest version (ties must be identical)."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for row in rows(out):
        prev = best.get(row["pk"])
        if prev is not None and prev[0] == row["version"]:
            # Exact columns must match; sketch bytes may differ (KLL compaction is randomised), within error.
            assert strip_sketches(prev[1]) == strip_sketches(row), "same key and version must mean the same row"
        if prev is None or row["version"] > prev[0]:
            best[row["pk"]] = (row["version"], row)
    return best


class ListReader(StatefulSourcePartition[RecordBatch, int]):
    """One partition's batches, one per call; the snapshot is the index of the next batch. Aborts the run once
    at `abort_at` (a shared set, emptied by the abort, so the resumed run goes on)."""

    def __init__(self, batches: list[RecordBatch], start: int, clock: InputClock, abort_at: set[int]) -> None:
        self.batches, self.i, self.clock, self.abort_at = batches, start, clock, abort_at

    def next_batch(self) -> list[RecordBatch]:
        if self.i in self.abort_at and self.i > 0:
            self.abort_at.discard(self.i)
            raise AbortExecution()
        if self.i >= len(self.batches):
            raise StopIteration
        batch = self.batches[self.i]
        self.i += 1
        self.clock.now = max(self.clock.now, datetime.fromtimestamp(max(batch.timestamps) / 1000, UTC))
        return [batch]

    def snapshot(self) -> int:
        return self.i

    @property
    def partition(self) -> int:
        return self.batches[0].partition

    @property
    def next_offset(self) -> int:  # as the Kafka reader tells it (livedash.dataflow.source.Positioned)
        return self.batches[self.i].offsets[0] if self.i < len(self.batches) else self.batches[-1].offsets[-1] + 1


class ListBatches(FixedPartitionedSource[RecordBatch, int]):
    def __init__(self, recs: list[Record], size: int, clock: InputClock, abort_at: set[int] | None = None) -> None:
        self.parts: dict[str, list[RecordBatch]] = defaultdict(list)
        by_partition: dict[int, list[Record]] = defaultdict(list)
        for rec in recs:
            by_partition[rec.partition].append(rec)
        for p, part in by_partition.items():
            self.parts[str(p)] = [batch_of(part[i : i + size]) for i in range(0, len(part), size)]
            for batch in self.parts[str(p)]:  # consecutive offsets come as a range from the Kafka source
                batch.offsets = range(batch.offsets[0], batch.offsets[-1] + 1)
        self.clock, self.abort_at = clock, abort_at if abort_at is not None else set()
        self.starts: dict[str, int] = {}  # where each partition last started (its resume state)

    def list_parts(self) -> list[str]:
        return sorted(self.parts)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> ListReader:
        self.starts[for_part] = resume_state or 0
        return ListReader(self.parts[for_part], resume_state or 0, self.clock, self.abort_at)
