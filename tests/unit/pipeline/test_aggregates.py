"""Aggregates through the dataflow: the sketches' columns."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("n", [60, 101, 150, 199, 375, 5_000])
def test_tdigest_column_puts_the_median_mass_at_the_median(n: int) -> None:
    """Pinot merges the t-digest column by weight: each centroid's weight must sit at its own ranks. The first
    version gave the remainder of n / 100 to the low centroids, and p50 came out at rank 0.40 for n = 150."""
    import random
    import struct

    import datasketches as ds

    from livedash.pipeline.aggregates import tdigest_bytes

    rng = random.Random(n)
    values = [rng.lognormvariate(4, 0.7) for _ in range(n)]
    kll = ds.kll_doubles_sketch(200)
    for v in values:
        kll.update(v)
    raw = tdigest_bytes(kll)
    # t-digest 3.2's SMALL encoding, as MergingDigest.fromBytes reads it (the layout checked here, not our reader)
    encoding, lo, hi, compression, size, buffer, m = struct.unpack_from(">iddfhhh", raw)
    assert (encoding, compression, size, buffer) == (2, 100.0, 210, 500) and m == min(n, 100)
    assert (lo, hi) == (min(values), max(values)) and len(raw) == struct.calcsize(">iddfhhh") + 8 * m
    pairs = struct.unpack_from(f">{2 * m}f", raw, struct.calcsize(">iddfhhh"))
    weights, means = pairs[0::2], pairs[1::2]
    assert sum(weights) == n and all(w == int(w) for w in weights)
    ordered = sorted(values)
    for q in (0.25, 0.5, 0.95):
        cum, i = 0.0, 0
        while cum + weights[i] < q * n:  # the centroid holding rank q * n
            cum += weights[i]
            i += 1
        rank = sum(1 for v in ordered if v <= means[i]) / n
        bound = 2 * ds.kll_doubles_sketch.get_normalized_rank_error(200, False) + 2 / min(n, 100)
        assert abs(rank - q) <= bound, (q, rank)


@pytest.mark.parametrize("parts", [1, 3, 24])
def test_pooled_tdigests_give_the_quantiles_of_the_union(parts: int) -> None:
    """The dashboard merges the pieces' t-digests (PERCENTILERAWTDIGEST) itself: the pooled quantile sits at
    its rank among all the values, and digests holding nothing give no value."""
    import random

    import datasketches as ds

    from livedash.pipeline.aggregates import tdigest_bytes, tdigest_quantile

    rng = random.Random(parts)
    values = [rng.lognormvariate(4, 0.7) for _ in range(30_000)]
    digests = []
    for i in range(parts):
        kll = ds.kll_doubles_sketch(200)
        for v in values[i::parts]:
            kll.update(v)
        digests.append(tdigest_bytes(kll))
    empty = tdigest_bytes(ds.kll_doubles_sketch(200))
    for q in (0.05, 0.5, 0.95, 0.99):
        got = tdigest_quantile([*digests, empty], q)
        assert got is not None
        rank = sum(v <= got for v in values) / len(values)
        assert abs(rank - q) <= 0.01, (q, rank)
    assert tdigest_quantile([empty], 0.95) is None and tdigest_quantile([], 0.95) is None
    # What Pinot returns (PERCENTILERAWTDIGEST) is VERBOSE: the same centroids in doubles read the same
    verbose = [_as_verbose(d) for d in digests]
    for q in (0.05, 0.5, 0.95):
        assert tdigest_quantile(verbose, q) == pytest.approx(tdigest_quantile(digests, q), rel=1e-6)
    for bad in (b"\x00\x00\x00\x03" + bytes(40), digests[0][:40], b"\x00\x00"):  # another encoding, cut short
        with pytest.raises(ValueError):
            tdigest_quantile([bad], 0.5)


def _as_verbose(small: bytes) -> bytes:
    """A SMALL t-digest re-encoded VERBOSE (encoding 1: doubles throughout), as Pinot serializes one."""
    import struct

    _, lo, hi, compression, _, _, m = struct.unpack_from(">iddfhhh", small)
    pairs = struct.unpack_from(f">{2 * m}f", small, struct.calcsize(">iddfhhh"))
    return struct.pack(">idddi", 1, lo, hi, compression, m) + struct.pack(f">{2 * m}d", *pairs)


def _events(n: int, seed: int) -> list:  # type: ignore[type-arg]
    import random

    from livedash.pipeline.contract import Event, Validator
    from tests.dataflow_runs import BASE, event, settings

    validator = Validator(settings().events)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        latency = None if rng.random() < 0.2 else rng.lognormvariate(4, 0.7)
        got = validator.parse(event(BASE + i, user=f"u{rng.randrange(60)}", latency=latency), BASE + i)
        assert isinstance(got, Event), got
        out.append(got)
    return out


@pytest.mark.parametrize("ticks", [1, 2, 7, 40])
def test_a_shard_group_fed_gains_counts_what_one_fed_the_events_counts(ticks: int) -> None:
    """Phase one sends what a group gained as raw distinct items and quantile values (Gains), not sketches: the
    merged group must hold the counts, min and max of the events exactly and their sums to rounding, the
    distinct count of the same users and a quantile sketch of the same values, however the events are cut into
    ticks; and a Gains snapshot restored mid-way changes nothing."""
    from livedash.pipeline import aggregates
    from livedash.pipeline.aggregates import Agg, Gains
    from livedash.pipeline.merge import MergeShard
    from tests.dataflow_runs import settings

    params = MergeShard(settings(), [0]).params
    events = _events(400, ticks)
    direct = Agg(params)
    for i, e in enumerate(events):
        direct.add(e, i)
    merged, gains = Agg(params), Gains(params)
    step = -(-len(events) // ticks)
    for t, start in enumerate(range(0, len(events), step)):
        gains.add_many(events[start : start + step], start + step - 1)
        if t == 1:
            gains = Gains.from_state(params, gains.to_state())  # type: ignore[assignment]
        merged.absorb(gains.drain())
        assert gains.count == 0 and not gains.items and not gains.values
        empty = Gains.from_state(params, gains.to_state())  # a drained group's snapshot: still nothing gained
        assert isinstance(empty, Gains) and empty.count == 0 and empty.max_offset == gains.max_offset
        n = len(params.metrics)  # the same in the full form older snapshots hold
        older = Gains.from_state(
            params, (0, [0.0] * n, [1e308] * n, [-1e308] * n, [0] * n, [], [], gains.max_offset, 0)
        )
        assert isinstance(older, Gains) and older.count == 0 and older.max_offset == gains.max_offset
    assert aggregates._UNSET == [] and aggregates._UNSET_ITEMS == {}  # the shared empty lists stayed empty
    got, want = merged.fields(), direct.fields()
    for column in want:
        if column.endswith(("_count", "_min", "_max")) or column == "last_event_ts":
            assert got[column] == want[column], column
        elif column.endswith("_sum"):  # a tick's sum is added to the merged one: the same terms, grouped
            assert got[column] == pytest.approx(want[column], rel=1e-12), column
    assert merged.theta_compact().get_estimate() == direct.theta_compact().get_estimate() == 60
    assert merged.kll.n == direct.kll.n == sum(1 for e in events if e.latency_ms is not None)
    assert merged.kll.get_min_value() == direct.kll.get_min_value()
    assert merged.kll.get_max_value() == direct.kll.get_max_value()


def test_a_snapshot_from_before_gains_restores_and_merges_as_before() -> None:
    """Snapshots taken before Gains hold phase one's groups as Agg states (serialized sketches): they restore as
    Aggs, and the shard absorbs their drain beside the Gains of newer ticks, to the same totals."""
    from livedash.pipeline.aggregates import Agg, Gains
    from livedash.pipeline.merge import MergeShard
    from tests.dataflow_runs import settings

    params = MergeShard(settings(), [0]).params
    events = _events(300, 3)
    old = Agg(params)
    old.add_many(events[:200], 199)
    restored = Gains.from_state(params, old.to_state())
    assert isinstance(restored, Agg)
    merged = Agg(params)
    merged.absorb(restored.drain())
    newer = Gains(params)
    newer.add_many(events[200:], 299)
    merged.absorb(newer.drain())
    direct = Agg(params)
    direct.add_many(events, 299)
    assert merged.count == direct.count == 300
    assert merged.msum == pytest.approx(direct.msum) and merged.mmin == direct.mmin and merged.mmax == direct.mmax
    assert merged.theta_compact().get_estimate() == direct.theta_compact().get_estimate()
    assert merged.kll.n == direct.kll.n


def _tdigest_reference(kll) -> bytes:  # type: ignore[no-untyped-def]
    """tdigest_bytes as first written, one centroid at a time in Python (in the SMALL encoding since 2026-12-07):
    the faster one must give its bytes."""
    import struct

    n = kll.n
    if n == 0:
        return struct.pack(">iddfhhh", 2, 0.0, 0.0, 100.0, 210, 500, 0)
    m = min(n, 100)
    cuts = [i * n // m for i in range(m + 1)]
    if n == m and not kll.is_estimation_mode():
        means = sorted(item for item, _ in kll)
    else:
        means = kll.get_quantiles([(cuts[i] + cuts[i + 1]) / (2 * n) for i in range(m)])
    pairs: list[float] = []
    for i, mean in enumerate(means):
        pairs += (float(cuts[i + 1] - cuts[i]), mean)
    header = struct.pack(">iddfhhh", 2, kll.get_min_value(), kll.get_max_value(), 100.0, 210, 500, m)
    return header + struct.pack(f">{2 * m}f", *pairs)


@pytest.mark.parametrize("k", [200, 8])
def test_tdigest_bytes_are_those_of_the_plain_construction(k: int) -> None:
    import random

    import datasketches as ds

    from livedash.pipeline.aggregates import tdigest_bytes

    rng = random.Random(k)
    for n in [*range(0, 130), 150, 301, 1000, 20_000]:
        for ties in (False, True):
            kll = ds.kll_doubles_sketch(k)
            for _ in range(n):
                kll.update(float(rng.randrange(20)) if ties else rng.lognormvariate(4, 1))
            assert tdigest_bytes(kll) == _tdigest_reference(kll), (n, ties)


@pytest.mark.parametrize("op", ["add_many", "absorb_gains", "absorb_state", "absorb_agg", "merged", "drain", "read"])
def test_a_frozen_group_is_the_group_it_was_for_every_operation(op: str) -> None:
    """A group idle for a snapshot interval keeps only its snapshot form (Agg.settle freezes it at the second
    snapshot without a change); every operation on it then gives what it gives on the group never frozen, row
    for row (a frozen group's sketches are None: an operation that did not thaw it would raise). A restored
    group starts frozen."""
    from livedash.pipeline.aggregates import Agg, Gains
    from livedash.pipeline.merge import MergeShard
    from tests.dataflow_runs import settings

    params = MergeShard(settings(), [0]).params
    # Fewer quantile values than the KLL's k: below it the sketch holds them all, so a row's t-digest is exact;
    # above, KLL's compaction draws random bits and a deserialized sketch merges to other (equally good) bytes.
    events = _events(200, 3)

    def group(frozen: bool) -> Agg:
        agg = Agg(params)
        agg.add_many(events[:100], 99)
        agg.settle()
        if frozen:
            assert not agg.frozen  # changed since the last snapshot (none): not frozen by the first
            agg.settle()
            assert agg.frozen and agg.kll is None and agg.theta is None  # type: ignore[comparison-overlap]
        return agg

    def other() -> Agg:
        agg = Agg(params)
        agg.add_many(events[100:], 199)
        return agg

    def apply(agg: Agg) -> Agg:
        if op == "add_many":
            agg.add_many(events[100:], 199)
        elif op == "absorb_gains":
            gains = Gains(params)
            gains.add_many(events[100:], 199)
            agg.absorb(gains.drain())
        elif op == "absorb_state":
            agg.absorb(other().to_state())
        elif op == "absorb_agg":
            agg.absorb_agg(other())
        elif op == "merged":
            return Agg.merged(params, [other(), agg])
        elif op == "drain":
            drained = Agg.from_state(params, agg.drain())
            assert agg.count == 0 and not agg.frozen and agg.fields()["event_count"] == 0
            agg.add_many(events[100:], 199)
            return Agg.merged(params, [drained, agg])
        return agg

    plain, frozen = apply(group(False)), apply(group(True))
    assert frozen.fields() == plain.fields()
    assert frozen.to_state() == plain.to_state()
    restored = Agg.from_state(params, plain.to_state())
    assert restored.frozen and restored.fields() == plain.fields()
    few = Agg(params)
    few.add_many(events[:20], 19)
    restored.absorb_agg(few)  # and thaws on a change, to the value the plain group reaches
    plain.absorb_agg(few)
    assert restored.fields() == plain.fields()
