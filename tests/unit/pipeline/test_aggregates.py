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
    _, _, _, _, m = struct.unpack_from(">idddi", raw)
    pairs = struct.unpack_from(f">{2 * m}d", raw, struct.calcsize(">idddi"))
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
    with pytest.raises(ValueError):
        tdigest_quantile([b"\x00\x00\x00\x02" + bytes(40)], 0.5)  # the SMALL encoding: not what Pinot returns
