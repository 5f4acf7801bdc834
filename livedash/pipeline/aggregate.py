"""One aggregate group (a roll-up's dimension values within one pane): count, per-metric sum/min/max, a Theta
sketch of distinct users and a KLL sketch of the quantile field. Pure; snapshots to plain bytes and numbers.

Sketches: the Theta sketch is accumulated in an update sketch; a snapshot stores its compact form, and a
restored group keeps that compact sketch beside a fresh update sketch (their union is the value). The KLL
sketch round-trips through its own serialization. Counts, sums, min and max are exact and depend only on the
events folded in (in partition order), so a replay reproduces them bit for bit.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

import datasketches as ds

from livedash.pipeline.contract import Event

DBL_MAX = sys.float_info.max  # MIN of a metric no event carried: merges correctly under Pinot's MIN
TDIGEST_COMPRESSION = 100.0
TDIGEST_CENTROIDS = 100  # Pinot 0.11's MergingDigest(100) holds at most 2 * 100 + 10


def tdigest_bytes(kll: ds.kll_doubles_sketch) -> bytes:
    """The KLL sketch as a t-digest in the VERBOSE encoding of t-digest 3.2 (what Pinot 0.11's
    PERCENTILETDIGEST reads from a BYTES column, via MergingDigest.fromBytes): centroids at evenly spaced mid-
    ranks with whole-number weights (Pinot truncates fractional weights when it merges rows). Pinot 0.11 has
    no PERCENTILEKLL; this lets analysts merge percentiles in Pinot, within KLL's error plus a few % of rank."""
    n = kll.n
    if n == 0:
        return struct.pack(">idddi", 1, 0.0, 0.0, TDIGEST_COMPRESSION, 0)
    m = min(n, TDIGEST_CENTROIDS)
    means = kll.get_quantiles([(i + 0.5) / m for i in range(m)])
    base, extra = divmod(n, m)
    out = [struct.pack(">idddi", 1, kll.get_min_value(), kll.get_max_value(), TDIGEST_COMPRESSION, m)]
    out += [struct.pack(">dd", float(base + (i < extra)), mean) for i, mean in enumerate(means)]
    return b"".join(out)


class SketchParams:
    __slots__ = ("distinct_field", "kll_k", "lg_k", "metrics", "quantile_field")

    def __init__(self, metrics: tuple[str, ...], distinct_field: str, quantile_field: str, lg_k: int, kll_k: int):
        self.metrics = metrics
        self.distinct_field = distinct_field
        self.quantile_field = quantile_field
        self.lg_k = lg_k
        self.kll_k = kll_k


class Agg:
    __slots__ = ("count", "kll", "last_ts", "max_offset", "mcount", "mmax", "mmin", "msum", "p", "theta", "theta_base")

    def __init__(self, p: SketchParams) -> None:
        self.p = p
        self.count = 0
        n = len(p.metrics)
        self.msum = [0.0] * n
        self.mmin = [DBL_MAX] * n
        self.mmax = [-DBL_MAX] * n
        self.mcount = [0] * n
        self.theta = ds.update_theta_sketch(p.lg_k)
        self.theta_base: ds.compact_theta_sketch | None = None  # restored from a snapshot
        self.kll = ds.kll_doubles_sketch(p.kll_k)
        self.max_offset = -1
        self.last_ts = 0

    def add(self, event: Event, offset: int) -> None:
        self.count += 1
        metrics = event.metrics
        if metrics:
            for i, name in enumerate(self.p.metrics):
                value = metrics.get(name)
                if value is not None:
                    self.msum[i] += value
                    self.mcount[i] += 1
                    if value < self.mmin[i]:
                        self.mmin[i] = value
                    if value > self.mmax[i]:
                        self.mmax[i] = value
            q = metrics.get(self.p.quantile_field)
            if q is not None:
                self.kll.update(q)
        self.theta.update(event.user_id if self.p.distinct_field == "user_id" else event.dims[self.p.distinct_field])
        if offset > self.max_offset:
            self.max_offset = offset
        if event.ts > self.last_ts:
            self.last_ts = event.ts

    def theta_compact(self) -> ds.compact_theta_sketch:
        if self.theta_base is None:
            return self.theta.compact()
        union = ds.theta_union(self.p.lg_k)
        union.update(self.theta_base)
        union.update(self.theta)
        return union.get_result()

    @classmethod
    def merged(cls, p: SketchParams, parts: list[Agg]) -> Agg:
        """The union of several panes' groups (a sliding window)."""
        out = cls(p)
        union = ds.theta_union(p.lg_k)
        for part in parts:
            out.count += part.count
            for i in range(len(p.metrics)):
                out.msum[i] += part.msum[i]
                out.mcount[i] += part.mcount[i]
                out.mmin[i] = min(out.mmin[i], part.mmin[i])
                out.mmax[i] = max(out.mmax[i], part.mmax[i])
            union.update(part.theta_compact())
            out.kll.merge(part.kll)
            out.max_offset = max(out.max_offset, part.max_offset)
            out.last_ts = max(out.last_ts, part.last_ts)
        out.theta_base = union.get_result()
        return out

    def fields(self) -> dict[str, Any]:
        """The aggregate columns of a row (see pinot/tables/aggregates/schema.json)."""
        row: dict[str, Any] = {"event_count": self.count}
        for i, name in enumerate(self.p.metrics):
            row[f"{name}_sum"] = self.msum[i]
            row[f"{name}_count"] = self.mcount[i]
            row[f"{name}_min"] = self.mmin[i]
            row[f"{name}_max"] = self.mmax[i]
        row["distinct_theta"] = self.theta_compact().serialize().hex()
        row["quantile_kll"] = self.kll.serialize().hex()
        row["quantile_tdigest"] = tdigest_bytes(self.kll).hex()
        row["last_event_ts"] = self.last_ts
        return row

    def to_state(self) -> tuple[Any, ...]:
        return (self.count, self.msum, self.mmin, self.mmax, self.mcount, self.theta_compact().serialize(),
                self.kll.serialize(), self.max_offset, self.last_ts)  # fmt: skip

    @classmethod
    def from_state(cls, p: SketchParams, state: tuple[Any, ...]) -> Agg:
        out = cls(p)
        (out.count, msum, mmin, mmax, mcount, theta, kll, out.max_offset, out.last_ts) = state
        out.msum, out.mmin, out.mmax, out.mcount = list(msum), list(mmin), list(mmax), list(mcount)
        out.theta_base = ds.compact_theta_sketch.deserialize(theta)
        out.kll = ds.kll_doubles_sketch.deserialize(kll)
        return out
