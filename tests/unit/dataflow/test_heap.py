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
