"""One aggregate group (a roll-up's dimension values within one pane): count, per-metric sum/min/max, a Theta
sketch of distinct users and a KLL sketch of the quantile field. Pure; snapshots to plain bytes and numbers.

Sketches: the Theta sketch is accumulated in an update sketch; a snapshot stores its compact form, and a
restored group keeps that compact sketch beside a fresh update sketch (their union is the value). The KLL
sketch round-trips through its own serialization. Counts, sums, min and max are exact and depend only on the
events folded in (in partition order), so a replay reproduces them bit for bit.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from functools import lru_cache, partial, reduce
from operator import add, attrgetter, is_not
from typing import Any, cast

import datasketches as ds
import msgspec
import numpy as np

from livedash.pipeline.contract import Event, event_time
from livedash.pipeline.rows import (
    DBL_MAX,
    DISTINCT,
    EVENT_COUNT,
    LAST_EVENT_TS,
    QUANTILE_TDIGEST,
    metric_columns,
)

TDIGEST_COMPRESSION = 100.0
TDIGEST_CENTROIDS = 100  # Pinot 0.11's MergingDigest(100) holds at most 2 * 100 + 10

# State in one msgpack buffer (a snapshot's pane, a tick's partials): Bytewax pickles a buffer in a memcpy, and
# msgpack encodes the groups' tuples and lists 3x faster than pickle walks them (0.24 against 0.70 s for a
# 57 MB state, bench.memory's), none of them left for the cyclic collector. Decoding gives lists for tuples
# and sets (and tuples for map keys): the restoring code converts.
pack_state = msgspec.msgpack.Encoder().encode
unpack_state = msgspec.msgpack.Decoder().decode


# t-digest 3.2's SMALL encoding (MergingDigest.asSmallBytes; fromBytes reads it, as Pinot 0.11 does for a BYTES
# column): encoding 2, min, max (doubles), compression (float), the arrays' sizes and the centroids used (shorts),
# then a float weight and a float mean per centroid: 8 bytes a centroid instead of VERBOSE's 16, half of the
# column's bytes in every row Pinot keeps. Floats hold whole weights up to 2**24 each (a centroid of over 16 M
# events) and values to 7 significant digits, far inside the digest's own rank error.
_SMALL_HEADER = struct.Struct(">iddfhhh")
_SMALL_SIZES = (2 * 100 + 10, 5 * 100)  # MergingDigest(100)'s arrays: fromBytes allocates these, >= centroids
_VERBOSE_HEADER = struct.Struct(">idddi")  # what Pinot returns (PERCENTILERAWTDIGEST) and rows held until 12-07


def tdigest_bytes(kll: ds.kll_doubles_sketch) -> bytes:
    """The KLL sketch as a t-digest in the SMALL encoding of t-digest 3.2 (what Pinot 0.11's PERCENTILETDIGEST
    reads from a BYTES column, via MergingDigest.fromBytes): centroids at evenly spaced mid-ranks with
    whole-number weights (Pinot truncates fractional weights when it merges rows). Pinot 0.11 has no
    PERCENTILEKLL; this lets analysts merge percentiles in Pinot, within KLL's error plus a few % of rank."""
    n = kll.n
    if n == 0:
        return _SMALL_HEADER.pack(2, 0.0, 0.0, TDIGEST_COMPRESSION, *_SMALL_SIZES, 0)
    m = min(n, TDIGEST_CENTROIDS)
    # Whole-number weights spread evenly over the ranks (cut points i*n//m): giving the remainder to the first
    # centroids instead put up to 2/3 of the mass below the median for n just above m (a 10% rank error).
    header = _SMALL_HEADER.pack(2, kll.get_min_value(), kll.get_max_value(), TDIGEST_COMPRESSION, *_SMALL_SIZES, m)
    if n <= 24 and not kll.is_estimation_mode():  # every item: the mid-rank quantiles; Python is quicker here
        flat: list[float] = []
        for item in sorted(item for item, _ in kll):
            flat += (1.0, item)
        return header + _centroids(m).pack(*flat)
    # In numpy from here on: building the cuts and ranks in Python was 40% of a large group's row.
    cuts = np.arange(m + 1, dtype=np.int64) * n // m
    if n == m and not kll.is_estimation_mode():
        means = np.sort(np.fromiter((item for item, _ in kll), np.float64, n))  # every item: the mid-ranks
    else:
        means = np.asarray(kll.get_quantiles(((cuts[:-1] + cuts[1:]) / (2 * n)).tolist()), dtype=np.float64)
    pairs = np.empty((m, 2), dtype=">f4")  # (weight, mean), big-endian floats
    pairs[:, 0] = np.diff(cuts)
    pairs[:, 1] = means
    return header + pairs.tobytes()


@lru_cache(maxsize=TDIGEST_CENTROIDS + 1)
def _centroids(m: int) -> struct.Struct:
    return struct.Struct(f">{2 * m}f")  # (weight, mean) pairs, big-endian floats


def tdigest_parts(data: bytes) -> tuple[float, float, np.ndarray, np.ndarray]:
    """min, max, weights and means of a t-digest in the SMALL (tdigest_bytes's) or VERBOSE encoding (what
    Pinot's PERCENTILERAWTDIGEST returns, hex-encoded); ValueError for anything else."""
    encoding = struct.unpack_from(">i", data)[0] if len(data) >= 4 else None
    if encoding == 2 and len(data) >= _SMALL_HEADER.size:
        _, lo, hi, _compression, _size, _buffer, m = _SMALL_HEADER.unpack_from(data)
        if m >= 0 and len(data) >= _SMALL_HEADER.size + 8 * m:
            pairs = np.frombuffer(data, dtype=">f4", count=2 * m, offset=_SMALL_HEADER.size)
            return lo, hi, pairs[0::2].astype(np.float64), pairs[1::2].astype(np.float64)
    elif encoding == 1 and len(data) >= _VERBOSE_HEADER.size:
        _, lo, hi, _compression, m = _VERBOSE_HEADER.unpack_from(data)
        if m >= 0 and len(data) >= _VERBOSE_HEADER.size + 16 * m:
            pairs = np.frombuffer(data, dtype=">f8", count=2 * m, offset=_VERBOSE_HEADER.size)
            return lo, hi, pairs[0::2].astype(np.float64), pairs[1::2].astype(np.float64)
    raise ValueError(f"not a t-digest in the SMALL or VERBOSE encoding (encoding {encoding}, {len(data)} bytes)")


def tdigest_quantile(digests: list[bytes], q: float) -> float | None:
    """The q-quantile of the union of t-digests (None when they hold nothing): their centroids pooled and read
    as MergingDigest.quantile reads its own (t-digest 3.2, the version Pinot 0.11 ships), interpolating between
    centroid centres, with the extremes at min and max. Pooling without re-compressing keeps every centroid, so
    the error is at most each digest's own."""
    parts = [tdigest_parts(d) for d in digests]
    parts = [p for p in parts if len(p[2]) and p[2].sum() > 0]
    if not parts:
        return None
    lo, hi = min(p[0] for p in parts), max(p[1] for p in parts)
    means = np.concatenate([p[3] for p in parts])
    order = np.argsort(means, kind="stable")
    means, weights = means[order], np.concatenate([p[2] for p in parts])[order]
    total, n = float(weights.sum()), len(means)
    index = q * total
    if n == 1 or index < 1:
        return lo if index < 1 else float(means[0])
    if weights[0] > 1 and index < weights[0] / 2:
        return lo + (index - 1) / (weights[0] / 2 - 1) * (means[0] - lo)
    if index > total - 1:
        return hi
    if weights[-1] > 1 and total - index <= weights[-1] / 2:
        return hi - (total - index - 1) / (weights[-1] / 2 - 1) * (hi - means[-1])
    # Centre i sits at cumulative weight so_far[i]; the target lies between centres i and i + 1.
    so_far = weights[0] / 2 + np.concatenate(([0.0], np.cumsum((weights[:-1] + weights[1:]) / 2)))
    i = int(np.searchsorted(so_far, index, side="right")) - 1
    if i >= n - 1:  # past the last centre: between it and max
        z1 = index - so_far[-1]
        return _between(float(means[-1]), weights[-1] / 2 - z1, hi, z1)
    left = right = 0.0
    if weights[i] == 1:
        if index - so_far[i] < 0.5:
            return float(means[i])
        left = 0.5
    if weights[i + 1] == 1:
        if so_far[i + 1] - index <= 0.5:
            return float(means[i + 1])
        right = 0.5
    z1, z2 = index - so_far[i] - left, so_far[i + 1] - index - right
    return _between(float(means[i]), z2, float(means[i + 1]), z1)


def _between(x1: float, w1: float, x2: float, w2: float) -> float:
    """The weighted average of x1 and x2, kept between them (MergingDigest.weightedAverage)."""
    if w1 + w2 <= 0:
        return x1
    value = (x1 * w1 + x2 * w2) / (w1 + w2)
    return max(min(x1, x2), min(max(x1, x2), value))


class SketchParams:
    __slots__ = ("columns", "distinct", "distinct_field", "kll_k", "lg_k", "metric_getters", "metric_values", "metrics",
                 "quantile_field", "quantile_index")  # fmt: skip

    def __init__(self, metrics: tuple[str, ...], distinct_field: str, quantile_field: str, lg_k: int, kll_k: int):
        self.metrics = metrics
        self.columns = tuple(map(metric_columns, metrics))
        self.distinct_field = distinct_field
        self.quantile_field = quantile_field
        self.lg_k = lg_k
        self.kll_k = kll_k
        getter: Callable[[Event], Any] = attrgetter(*metrics)  # one name: the value; several: a tuple
        self.metric_values: Callable[[Event], tuple[float | None, ...]] = (
            getter if len(metrics) > 1 else lambda event: (getter(event),)
        )
        self.metric_getters = tuple(attrgetter(m) for m in metrics)
        self.distinct = attrgetter(distinct_field)
        self.quantile_index = metrics.index(quantile_field)


_NOT_NONE = partial(is_not, None)
# A frozen group's sketch attributes (Agg.freeze): None, typed as sketches so that the hot paths need no checks;
# every change thaws first, and a path that did not would fail at once instead of changing a shared sketch. (Not
# empty sketches shared by all: nanobind reports instances alive at exit as leaks.)
_NO_THETA = cast(ds.update_theta_sketch, None)
_NO_KLL = cast(ds.kll_doubles_sketch, None)


class Agg:
    __slots__ = ("buf", "buf_last", "compact", "count", "frozen", "home", "kll", "last_ts", "max_offset", "mcount",
                 "mmax", "mmin", "msum", "p", "state", "theta", "theta_base", "union")  # fmt: skip
    theta_base: ds.compact_theta_sketch | None  # restored from a snapshot
    # absorb's: the partials' Theta sketches, compacted only when the value is read (theta_compact), not at every
    # partial (a merged group takes one from each partition every tick)
    union: ds.theta_union | None
    compact: ds.compact_theta_sketch | None  # cached theta_compact(), until the next add
    state: tuple[Any, ...] | None  # cached to_state(), until the next add
    frozen: bool  # only `state` holds the sketches (freeze)

    def __init__(self, p: SketchParams, state: tuple[Any, ...] | None = None) -> None:
        """An empty group, or with state (to_state's form) a frozen one (from_state)."""
        self.p = p
        self.max_offset = -1
        self.home: Any = None  # where the windowing keeps this group (not part of the state)
        self.buf: list[Event] = []  # events gathered for the next fold() (the windowing's batch)
        self.buf_last = -1  # source offset of the last of them
        if state is None:
            self._empty()
            return
        (self.count, msum, mmin, mmax, mcount, theta, kll, self.max_offset, self.last_ts) = state
        self.msum, self.mmin, self.mmax, self.mcount = list(msum), list(mmin), list(mmax), list(mcount)
        self.state = (self.count, list(msum), list(mmin), list(mmax), list(mcount), theta, kll, self.max_offset,
                      self.last_ts)  # fmt: skip
        self.theta, self.kll = _NO_THETA, _NO_KLL
        self.theta_base = self.union = self.compact = None
        self.frozen = True

    def _empty(self) -> None:
        """Every value field as for a group that took nothing (max_offset stays: offsets only grow)."""
        p = self.p
        n = len(p.metrics)
        self.count = 0
        self.msum, self.mmin, self.mmax, self.mcount = [0.0] * n, [DBL_MAX] * n, [-DBL_MAX] * n, [0] * n
        self.theta = ds.update_theta_sketch(p.lg_k)
        self.theta_base = self.union = self.compact = self.state = None
        self.kll = ds.kll_doubles_sketch(p.kll_k)
        self.last_ts = 0
        self.frozen = False

    def freeze(self) -> None:
        """Keep the group as its snapshot form only, its sketches as their bytes: in memory a group of a few
        events held 3.2-3.6 KB as sketches (an empty KLL 1.9 KB, an update sketch 1.2 KB) and its cached state
        besides, against 0.3-1.1 KB so. For groups that take no more events for a while: an ended window waiting
        out the allowed lateness, a derived window between its parts, a group restored from a snapshot. Reading
        it (theta_compact, quantiles, fields) deserializes what it reads; a change thaws it (_thaw)."""
        if self.frozen:
            return
        self.to_state()
        self.theta, self.kll = _NO_THETA, _NO_KLL  # never updated: every change thaws first
        self.theta_base = self.union = self.compact = None
        self.frozen = True

    def _thaw(self) -> None:
        compact, kll = self.theta_compact(), self.quantiles()  # a frozen group's reads: deserialized
        self.theta = ds.update_theta_sketch(self.p.lg_k)
        self.theta_base = self.compact = compact
        self.kll = kll
        self.frozen = False

    def settle(self) -> tuple[Any, ...]:
        """The snapshot form, for a snapshot: a group unchanged since the last one (its form still cached) is
        frozen, so what stays idle for a snapshot interval is held as bytes."""
        if self.state is not None:
            self.freeze()
        return self.to_state()

    def quantiles(self) -> ds.kll_doubles_sketch:
        """The KLL sketch, to read (not to update: a frozen group's is deserialized for the caller)."""
        if self.frozen:
            assert self.state is not None
            return ds.kll_doubles_sketch.deserialize(self.state[6])
        return self.kll

    def add(self, event: Event, offset: int) -> None:
        self.add_many([event], offset)

    def fold(self) -> None:
        """Fold in the events gathered in buf."""
        if self.buf:
            self.add_many(self.buf, self.buf_last)
            self.buf = []

    def add_many(self, events: list[Event], last_offset: int) -> None:
        """Fold events in, in order; last_offset is the source offset of the last one (offsets only grow)."""
        p = self.p
        if self.frozen:
            self._thaw()
        self.compact = self.state = None
        self.count += len(events)
        msum, mmin, mmax, mcount = self.msum, self.mmin, self.mmax, self.mcount
        if len(events) == 1:  # the common case in fine-grained groups: no lists to build
            event = events[0]
            for i, v in enumerate(p.metric_values(event)):
                if v is not None:
                    msum[i] += v
                    mcount[i] += 1
                    if v < mmin[i]:
                        mmin[i] = v
                    if v > mmax[i]:
                        mmax[i] = v
                    if i == p.quantile_index:
                        self.kll.update(v)
            item = p.distinct(event)
            if item is not None:
                self.theta.update(item)
            ts = event.ts
        else:
            for i, getter in enumerate(p.metric_getters):
                values = list(filter(_NOT_NONE, map(getter, events)))  # in C: no bytecode per event
                if not values:
                    continue
                # Left to right, as one event at a time would: sums depend only on the events and their order.
                msum[i] = reduce(add, values, msum[i])
                mcount[i] += len(values)
                low, high = min(values), max(values)
                if low < mmin[i]:
                    mmin[i] = low
                if high > mmax[i]:
                    mmax[i] = high
                if i == p.quantile_index:
                    if len(values) > 8:
                        self.kll.update(np.array(values, dtype=np.float64))
                    else:
                        for v in values:
                            self.kll.update(v)
            items = set(map(p.distinct, events))  # the sketch only sees distinct items: skip repeats
            items.discard(None)
            deque(map(self.theta.update, items), maxlen=0)
            ts = max(map(event_time, events))
        if last_offset > self.max_offset:
            self.max_offset = last_offset
        if ts > self.last_ts:
            self.last_ts = ts

    def theta_compact(self) -> ds.compact_theta_sketch:
        if self.frozen:  # to read: not kept, the group stays frozen
            assert self.state is not None
            return ds.compact_theta_sketch.deserialize(self.state[5])
        if self.compact is None:
            if self.union is not None:
                if not self.theta.is_empty():
                    self.union.update(self.theta)
                    self.theta = ds.update_theta_sketch(self.p.lg_k)
                self.compact = self.union.get_result()
            elif self.theta_base is None:
                self.compact = self.theta.compact()
            else:
                union = ds.theta_union(self.p.lg_k)
                union.update(self.theta_base)
                union.update(self.theta)
                self.compact = union.get_result()
        return self.compact

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
            out.kll.merge(part.quantiles())
            out.max_offset = max(out.max_offset, part.max_offset)
            out.last_ts = max(out.last_ts, part.last_ts)
        out.theta_base = union.get_result()
        return out

    def absorb_agg(self, other: Agg) -> None:
        """Fold in another group's whole value (a finer window's final value into a coarser window's group, the
        cascade): sums add, min/max combine, sketches unite. The Theta union is compacted at once: a coarse
        group waits minutes for its next part, and a compact sketch takes half an open union's memory."""
        if self.frozen:
            self._thaw()
        self.state = None
        self.count += other.count
        for i in range(len(self.msum)):
            self.msum[i] += other.msum[i]
            self.mcount[i] += other.mcount[i]
            if other.mmin[i] < self.mmin[i]:
                self.mmin[i] = other.mmin[i]
            if other.mmax[i] > self.mmax[i]:
                self.mmax[i] = other.mmax[i]
        union = ds.theta_union(self.p.lg_k)
        union.update(self.theta_compact())
        union.update(other.theta_compact())
        self.theta = ds.update_theta_sketch(self.p.lg_k)
        self.union = None
        self.theta_base = self.compact = union.get_result()
        self.kll.merge(other.quantiles())
        if other.max_offset > self.max_offset:
            self.max_offset = other.max_offset
        if other.last_ts > self.last_ts:
            self.last_ts = other.last_ts

    def drain(self) -> tuple[Any, ...]:
        """What the group gained since the last drain, in snapshot form, and the group emptied (its place in the
        pane's routes stays): the partial a source partition sends to the merge (livedash.pipeline.merge)."""
        state = self.to_state()
        self._empty()
        return state

    def absorb(self, state: tuple[Any, ...]) -> None:
        """Fold in a partial: Gains.drain's form (the distinct items and quantile values themselves, which go
        into this group's sketches) or another group's snapshot form (Agg.drain's, sent by phase one before
        Gains: serialized sketches, which unite). Sums add, min/max combine."""
        count, msum, mmin, mmax, mcount, theta, kll, max_offset, last_ts = state
        if self.frozen:
            self._thaw()
        if isinstance(theta, list):
            self._absorb_gains(count, msum, mmin, mmax, mcount, theta, kll, max_offset, last_ts)
            return
        self.compact = self.state = None
        self.count += count
        for i in range(len(self.msum)):
            self.msum[i] += msum[i]
            self.mcount[i] += mcount[i]
            if mmin[i] < self.mmin[i]:
                self.mmin[i] = mmin[i]
            if mmax[i] > self.mmax[i]:
                self.mmax[i] = mmax[i]
        union = self.union
        if union is None:
            union = self.union = ds.theta_union(self.p.lg_k)
            if self.theta_base is not None:
                union.update(self.theta_base)
                self.theta_base = None
        union.update(ds.compact_theta_sketch.deserialize(theta))
        self.kll.merge(ds.kll_doubles_sketch.deserialize(kll))
        if max_offset > self.max_offset:
            self.max_offset = max_offset
        if last_ts > self.last_ts:
            self.last_ts = last_ts

    def _absorb_gains(self, count: int, msum: list[float], mmin: list[float], mmax: list[float], mcount: list[int],
                      items: list[Any], values: list[float], max_offset: int, last_ts: int) -> None:  # fmt: skip
        self.compact = self.state = None
        self.count += count
        for i in range(len(self.msum)):
            if mcount[i]:
                self.msum[i] += msum[i]
                self.mcount[i] += mcount[i]
                if mmin[i] < self.mmin[i]:
                    self.mmin[i] = mmin[i]
                if mmax[i] > self.mmax[i]:
                    self.mmax[i] = mmax[i]
        deque(map(self.theta.update, items), maxlen=0)
        if len(values) > 8:
            self.kll.update(np.array(values, dtype=np.float64))
        else:
            for v in values:
                self.kll.update(v)
        if max_offset > self.max_offset:
            self.max_offset = max_offset
        if last_ts > self.last_ts:
            self.last_ts = last_ts

    def fields(self) -> dict[str, Any]:
        """The aggregate columns of a row (see pinot/tables/aggregates/schema.json)."""
        row: dict[str, Any] = {EVENT_COUNT: self.count}
        for i, (c_sum, c_count, c_min, c_max) in enumerate(self.p.columns):
            row[c_sum] = self.msum[i]
            row[c_count] = self.mcount[i]
            row[c_min] = self.mmin[i]
            row[c_max] = self.mmax[i]
        row[DISTINCT] = self.theta_compact().serialize().hex()
        row[QUANTILE_TDIGEST] = tdigest_bytes(self.quantiles()).hex()
        row[LAST_EVENT_TS] = self.last_ts
        return row

    def to_state(self) -> tuple[Any, ...]:
        """Snapshot form, cached until the group changes: snapshots come every few seconds and most groups of
        the panes still open (waiting out the allowed lateness) no longer change."""
        if self.state is None:
            # Copies: a snapshot must not change when the group does (Bytewax pickles it later, not at once).
            self.state = (self.count, self.msum[:], self.mmin[:], self.mmax[:], self.mcount[:],
                          self.theta_compact().serialize(), self.kll.serialize(), self.max_offset,
                          self.last_ts)  # fmt: skip
        return self.state

    @classmethod
    def from_state(cls, p: SketchParams, state: tuple[Any, ...]) -> Agg:
        """A frozen group (freeze): most of a restored state are ended windows that take no more events."""
        return cls(p, state)


_UNSET: list[Any] = []  # Gains' lists while it holds nothing: never written to
_UNSET_ITEMS: dict[Any, None] = {}


class Gains:
    """What one group of one pane gained in one source partition since the last tick, in phase one of the
    two-phase merge (livedash.pipeline.merge): counts, sums, min and max, and the distinct items and quantile
    values themselves instead of sketches, which the merge shard's group (an Agg) takes in (Agg.absorb).

    Phase one keeps a pane's groups until its windows are final (late events still route to them), but empty
    after each tick: an Agg with its two sketches took 3.6 KB empty (KLL 1.9, Theta 1.1), and serializing,
    deserializing and uniting sketches per partial and tick was a third of the live dataflow's CPU. The items
    of one tick are bounded by the tick's events. The interface is the part of Agg's that the windowing uses.
    """

    __slots__ = ("buf", "buf_last", "count", "home", "items", "last_ts", "max_offset", "mcount", "mmax", "mmin",
                 "msum", "p", "values")  # fmt: skip

    def __init__(self, p: SketchParams) -> None:
        self.p = p
        self.home: Any = None  # where the windowing keeps this group
        self.buf: list[Event] = []  # events gathered for the next fold() (the windowing's batch)
        self.buf_last = -1
        self.max_offset = -1
        self._empty()

    def _empty(self) -> None:
        """No gains: most groups of a pane get none after its window ends, so their lists are made only at the
        next event (_start); until then these attributes are shared and never written to."""
        self.count = 0
        self.msum = self.mmin = self.mmax = self.mcount = _UNSET
        self.items: dict[Any, None] = _UNSET_ITEMS
        self.values: list[float] = _UNSET
        self.last_ts = 0

    def _start(self) -> None:
        n = len(self.p.metrics)
        self.msum, self.mmin, self.mmax, self.mcount = [0.0] * n, [DBL_MAX] * n, [-DBL_MAX] * n, [0] * n
        self.items = {}  # distinct items in first-seen order (a replay sends the same list)
        self.values = []

    def fold(self) -> None:
        if self.buf:
            self.add_many(self.buf, self.buf_last)
            self.buf = []

    def add_many(self, events: list[Event], last_offset: int) -> None:
        """Fold events in, in order, as Agg.add_many does (the same sums, in the same order)."""
        p = self.p
        if not self.count:
            self._start()
        self.count += len(events)
        msum, mmin, mmax, mcount = self.msum, self.mmin, self.mmax, self.mcount
        for i, getter in enumerate(p.metric_getters):
            values = list(filter(_NOT_NONE, map(getter, events)))
            if not values:
                continue
            msum[i] = reduce(add, values, msum[i])
            mcount[i] += len(values)
            low, high = min(values), max(values)
            if low < mmin[i]:
                mmin[i] = low
            if high > mmax[i]:
                mmax[i] = high
            if i == p.quantile_index:
                self.values += values
        self.items.update(dict.fromkeys(map(p.distinct, events)))
        self.items.pop(None, None)
        ts = max(map(event_time, events))
        if last_offset > self.max_offset:
            self.max_offset = last_offset
        if ts > self.last_ts:
            self.last_ts = ts

    def drain(self) -> tuple[Any, ...]:
        """What the group gained since the last drain (Agg.absorb's form), and the group emptied."""
        out = (self.count, self.msum, self.mmin, self.mmax, self.mcount, list(self.items), self.values,
               self.max_offset, self.last_ts)  # fmt: skip
        self._empty()
        return out

    def settle(self) -> tuple[Any, ...]:
        """Agg.settle's counterpart: nothing to freeze (drained every tick)."""
        return self.to_state()

    def to_state(self) -> tuple[Any, ...]:
        if not self.count:  # most groups of a snapshot (drained at every tick): no lists to build or pickle
            return (0, self.max_offset)
        return (self.count, self.msum[:], self.mmin[:], self.mmax[:], self.mcount[:], list(self.items),
                self.values[:], self.max_offset, self.last_ts)  # fmt: skip

    @classmethod
    def from_state(cls, p: SketchParams, state: tuple[Any, ...]) -> Gains | Agg:
        """A group from its snapshot form; a snapshot taken before Gains holds Agg's form (serialized sketches),
        restored as an Agg, whose drain the merge absorbs as before."""
        if len(state) > 2 and isinstance(state[5], bytes):
            return Agg.from_state(p, state)
        out = cls(p)
        if not state[0]:
            out.max_offset = state[1] if len(state) == 2 else state[7]  # (older snapshots: the full form)
            return out
        (out.count, msum, mmin, mmax, mcount, items, values, out.max_offset, out.last_ts) = state
        out.msum, out.mmin, out.mmax, out.mcount = list(msum), list(mmin), list(mmax), list(mcount)
        out.items, out.values = dict.fromkeys(items), list(values)
        return out
