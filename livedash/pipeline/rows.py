"""The aggregate row format, in one place: the sentinel values, the primary key, the version and the columns
of a row. The windows build rows with it, verify and the dashboard query their columns by it, and
pinot/tables/aggregates*/schema.json declare the same columns (tests/unit/pipeline/test_rows.py checks)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

ALL = "__all__"  # the value of a dimension a roll-up does not group by
OTHER = "__other__"  # the bucket for dimension values beyond a cap
MISSING = "__none__"  # the value of a dimension an event does not carry
RESERVED = frozenset({ALL, OTHER})  # roll-up values a producer cannot send as its own (MISSING means absent)
DBL_MAX = sys.float_info.max  # MIN of a metric no event carried: merges correctly under Pinot's MIN

# Columns of every row, before the dimensions: key, roll-up, window, source partition (MERGED, -1, for a row
# of every partition's events), the partitions whose events the row holds, kind (window or late). verify reads
# source_partitions to learn which values each partition kept under its caps.
SOURCES = "source_partitions"
KEY_COLUMNS = ("pk", "rollup_name", "window_start", "window_end", "source_partition", SOURCES, "kind")
EVENT_COUNT = "event_count"
DISTINCT = "distinct_theta"  # Theta sketch of the distinct field, hex
# The quantile field's distribution as a t-digest (from the dataflow's KLL sketch), hex: what Pinot 0.11 can
# merge. The KLL sketch itself is not written: no Pinot before 1.0 reads it (PERCENTILEKLL), and it was a fifth of
# every row's bytes (docs/benchmarks.md, "What the rows hold"); rows until 2026-12-07 carry it as quantile_kll.
QUANTILE_TDIGEST = "quantile_tdigest"
LAST_EVENT_TS = "last_event_ts"
# After the aggregates: 1 once the window is final (closed); the version Pinot's upsert compares.
STATUS_COLUMNS = ("is_final", "version")


class Row(NamedTuple):
    key: bytes  # Kafka message key = Pinot primary key
    value: bytes  # the row as JSON (see pinot/tables/aggregates/schema.json)
    role: str = "aggregates"  # the sink's name for its topic: aggregates (recent tier), history, or live


def primary_key(parts: list[Any]) -> bytes:
    """The row's key: 32 hex digits of a BLAKE2b digest of its parts as JSON. Fixed length, so no column limit
    can cut it: Pinot cut the JSON itself at 512 characters, and two rows whose keys shared those collided in
    the upsert (a dimension value of 256 emoji is 512 UTF-16 units). 128 bits: at a billion keys, the chance
    of any collision is about 1e-21."""
    return hashlib.blake2b(orjson.dumps(parts), digest_size=16).hexdigest().encode()


def key_parts(
    rollup: str, window_start: int, dims: Iterable[str], partition: int, late: tuple[int, int] | None
) -> list[Any]:
    """What a row's key is a digest of: [roll-up, window start, its dimension values..., source partition], and
    for a correction row ["late", its block's start, the block's length] after them (late: those two, ms of the
    partition's watermark)."""
    parts: list[Any] = [rollup, window_start, *dims, partition]
    return parts if late is None else [*parts, "late", *late]


def late_block(watermark: int, block_ms: int) -> int:
    """The start of the late-correction block (windows.late_block_s) of a late event that met this watermark."""
    return watermark - watermark % block_ms


def version(max_offset: int, final: bool) -> int:
    """Grows with the input: 2 * (highest source offset folded into the row) + is_final. A replay of the same
    offsets re-publishes rows with the same versions, so Pinot's upsert never regresses."""
    return 2 * max_offset + int(final)


def metric_columns(metric: str) -> tuple[str, str, str, str]:
    """A metric's columns: sum, count (events that carry it), min, max."""
    return f"{metric}_sum", f"{metric}_count", f"{metric}_min", f"{metric}_max"


def columns(dimensions: Iterable[str], metrics: Iterable[str]) -> list[str]:
    """Every column of an aggregate row, in the order a row holds them."""
    return [
        *KEY_COLUMNS,
        *dimensions,
        EVENT_COUNT,
        *(c for m in metrics for c in metric_columns(m)),
        DISTINCT,
        QUANTILE_TDIGEST,
        LAST_EVENT_TS,
        *STATUS_COLUMNS,
    ]
