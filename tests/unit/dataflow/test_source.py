"""WindowedSource: each partition windowed where it is read, resumed from its snapshot."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, cluster_main, run_main

from livedash.dataflow.flow import build_windowed_flow
from livedash.dataflow.source import WindowedSource
from livedash.kafka.messages import Out
from tests.dataflow_runs import (
    InputClock,
    ListBatches,
    final_state,
    run,
    settings,
    strip_sketches,
    valid_events,
    with_invalid,
    workload,
)


@pytest.mark.parametrize("workers", [1, 2])
def test_windows_read_where_their_partition_is_read_give_what_the_keyed_step_gives(workers: int) -> None:
    """The shipped flow windows each partition inside its source partition (no exchange between workers);
    it must publish exactly what the keyed stateful step does on the same batches."""
    cfg = settings()
    recs = with_invalid(workload())
    keyed_out = run(cfg, recs, batch_size=1)
    keyed = final_state(keyed_out)
    clock = InputClock()
    out: list[Out] = []
    flow = build_windowed_flow(WindowedSource(ListBatches(recs, 13, clock), cfg, clock), TestingSink(out))
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    windowed = final_state(out)
    side = lambda o: sorted((x.role, x.headers, x.value) for x in o if isinstance(x, Out) and x.headers)  # noqa: E731
    assert side(out) == side(keyed_out)  # the same dead letters and late events
    assert {x.role for x in out if isinstance(x, Out) and x.headers} == {"dead_letter", "late"}
    assert valid_events(out) == valid_events(keyed_out)  # and the same valid events, in order, per partition
    assert windowed.keys() == keyed.keys()
    assert {r["source_partition"] for _, r in windowed.values()} == {0, 1, 2, 3}
    for pk, (version, row) in keyed.items():
        assert windowed[pk][0] == version
        assert strip_sketches(windowed[pk][1]) == strip_sketches(row)


@pytest.mark.parametrize("shards", [0, 3])
def test_windowed_source_resumes_from_its_snapshot_exactly(tmp_path: Path, shards: int) -> None:
    """Aborted mid-input and resumed from Bytewax's recovery store: offsets and windows come back together (and
    the merge shards' groups, with shards), and what both runs published leaves Pinot's upsert with exactly
    the rows of one uninterrupted run."""
    cfg = settings(merge_shards=shards)
    whole = final_state(run(cfg, workload(), batch_size=1))
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    clock = InputClock()
    abort_at = {9}  # the first partition to reach its 10th batch (of 24, 13 messages each) aborts the run
    out: list[Out] = []
    batches = ListBatches(workload(), 13, clock, abort_at)
    source = WindowedSource(batches, cfg, clock)
    # One worker: an AbortExecution in a cluster_main of two workers hangs the other (Bytewax 0.21.1).
    go = lambda: run_main(build_windowed_flow(source, TestingSink(out)), epoch_interval=timedelta(0),  # noqa: E731
                          recovery_config=recovery)  # fmt: skip
    go()
    first = len(out)
    assert first and not abort_at  # stopped at the abort (Bytewax ends the execution quietly)
    assert whole.keys() - final_state(out).keys()  # some windows were not published yet
    go()
    assert len(out) > first
    assert all(start > 0 for start in batches.starts.values())  # resumed from the snapshots, not from scratch
    resumed = final_state(out)
    assert resumed.keys() == whole.keys()
    for pk, (version, row) in whole.items():
        assert resumed[pk][0] == version
        assert strip_sketches(resumed[pk][1]) == strip_sketches(row)


def test_the_recovery_directory_changes_with_the_rollups() -> None:
    """A snapshot holds each roll-up's windows in order and cannot be restored under other roll-ups: the
    managed dataflow's directory is named after them, so a changed pipeline starts over from the raw topic
    (the versioned upserts make the replay harmless) instead of failing to restore."""
    from livedash.dataflow.source import recovery_name

    cfg = settings()
    name = recovery_name(cfg)
    assert name == recovery_name(cfg.model_copy()) and name.startswith("v")
    first = cfg.rollups[0]
    finer = first.model_copy(update={"window": first.window.model_copy(update={"size_s": first.window.size_s * 2})})
    for rollups in (cfg.rollups[1:], (*cfg.rollups, first.model_copy(update={"name": "again"})),
                    (finer, *cfg.rollups[1:])):  # fmt: skip
        assert recovery_name(cfg.model_copy(update={"rollups": rollups})) != name
