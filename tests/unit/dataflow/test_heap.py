"""The dataflow's C heap settings (livedash.dataflow.heap): on glibc, which the stack runs on."""

from __future__ import annotations

import platform

import pytest

from livedash.dataflow import heap

glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


@glibc
def test_the_mmap_threshold_is_fixed_and_the_heap_trimmed_at_most_every_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert heap.fix_mmap_threshold()  # mallopt accepted it
    monkeypatch.setattr(heap, "_next_trim", 0.0)
    assert heap.trim()
    assert not heap.trim()  # the next publish within TRIM_EVERY_S: not again
    monkeypatch.setattr(heap, "_next_trim", 0.0)
    assert heap.trim()


def test_every_publish_of_a_partition_and_of_a_merge_shard_asks_for_a_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trim is rate-limited in heap.trim, so the publishes may ask every time: both kinds must."""
    from livedash.dataflow.logic import PartitionLogic, ShardTick
    from livedash.dataflow.merging import MergeLogic
    from tests.dataflow_runs import BASE, InputClock, event, records, settings
    from tests.dataflow_scaffold import batch_of

    asked: list[str] = []
    monkeypatch.setattr(heap, "trim", lambda: asked.append("trim") or False)
    cfg = settings(merge_shards=1)
    clock = InputClock()
    part = PartitionLogic(cfg, clock, None)
    part.start(0)
    merge = MergeLogic(cfg, [0], clock, None)
    for rec in records([(BASE + i * 1000, event(BASE + i * 1000)) for i in range(3)]):
        clock.see(rec)
        before = len(asked)
        ticks = [o.payload for o in part.on_batch([batch_of([rec])])[0] if isinstance(o, ShardTick)]
        assert ticks and len(asked) == before + 1  # the partition's publish
        merge.on_batch(ticks)
        assert len(asked) == before + 2  # the shard's
