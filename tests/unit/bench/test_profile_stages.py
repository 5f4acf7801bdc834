"""bench.profile_stages: py-spy's collapsed stacks counted per stage, worker threads only."""

from __future__ import annotations

from pathlib import Path

from bench.profile_stages import worker_shares

WORKER = "thread_start (thread.rs:108);bytewax::worker::worker_main::h1 (_bytewax.so)"
RAW = "\n".join([
    f"{WORKER};PartitionLogic.on_batch (dataflows/aggregate.py:128);Validator.parse_batch (contract.py:104);"
    "ms_decode (msgspec/_core.so) 7",
    f"{WORKER};PartitionLogic._events (dataflows/aggregate.py:146);PartitionWindows.add_batch (windowing.py:200);"
    "Agg.add_many (aggregate.py:153) 5",
    f"{WORKER};Validator.parse_batch (contract.py:104);pthread_cond_wait (libc.so.6);0x7f4b (libc.so.6) 2",
    f"{WORKER};StatefulPartition::next_batch (_bytewax.so) 1",
    "<module> (run.py:355);pyo3::gil::GILGuard::acquire (_bytewax.so);pthread_cond_timedwait (libc.so.6) 40",
])  # fmt: skip


def test_worker_samples_are_counted_by_their_innermost_stage(tmp_path: Path) -> None:
    raw = tmp_path / "p0.txt"
    raw.write_text(RAW + "\n")
    total, counts = worker_shares([raw])
    assert total == 15  # the main thread's 40 samples are not the worker's
    assert counts == {
        "msgspec decode": 7,  # the leaf's stage, not parse_batch above it
        "folding: sums, min and max, Theta and KLL": 5,
        "waiting for the GIL": 2,
        "Bytewax runtime, metrics, snapshots, other": 1,
    }
