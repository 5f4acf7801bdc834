"""`livedash verify`'s logic without servers: the dataflow's rows (kept as Pinot's upsert would) against an
independent recount of the same messages, and sinks broken on purpose that verify must catch."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from livedash.kafka.messages import OutBatch
from livedash.pipeline.rows import DBL_MAX
from livedash.pipeline.settings import PipelineSettings
from livedash.verify.recount import Found, GroupKey, Recount, Report, compare_rollup
from tests.dataflow_runs import BASE, Out, Record, event, records, run, settings

CAPPED = 2  # country cap in these tests: with 4 countries, "__other__" rows appear


def cfg() -> PipelineSettings:
    """The flow's roll-ups and two derived from the 10 s one (the cascade, a chain), which verify recounts from
    the finer roll-up's capped groups and its own late corrections."""
    base = settings().model_dump()
    base["events"]["dimensions"]["country"] = CAPPED
    base["rollups"] = [
        *base["rollups"],
        {"name": "tumble_30s", "dimensions": ["type", "country"], "window": {"size_s": 30}, "from": "tumble_10s"},
        {"name": "tumble_60s", "dimensions": ["type", "country"], "window": {"size_s": 60}, "from": "tumble_30s"},
    ]
    return PipelineSettings.model_validate(base)


def workload() -> list[Record]:
    out = []
    for p in range(3):
        values = []
        for i in range(400):
            ts = BASE + i * 200 + p * 70
            late = i % 40 == 39  # 20 s behind: past the 5 s lateness of its window
            values.append((ts, event(ts - (20_000 if late else 0), kind="click" if i % 3 else "view",
                                     country=["DE", "FR", "US", "JP"][(i * 7 + p) % 4], user=f"u{i % 31}",
                                     latency=None if i % 11 == 0 else float(i % 23))))  # fmt: skip
        values.append((BASE + 200_000, event(BASE + 200_000)))  # closes every window of the partition
        values.append((BASE + 200_001, b'{"not": "an event"}'))
        out += records(values, partition=p)
    return out


def upserted(out: list[Out]) -> list[dict[str, Any]]:
    """What Pinot's upsert keeps, as verify reads it (the tier's table, and the live one for windows not final
    there yet; a final row in both is the same row): per primary key, the row with the highest version."""
    best: dict[str, dict[str, Any]] = {}
    for o in (x for item in out for x in (item.outs if isinstance(item, OutBatch) else [item])):
        if o.role not in ("aggregates", "history", "live"):
            continue
        row = orjson.loads(o.value)
        if row["pk"] not in best or row["version"] >= best[row["pk"]]["version"]:
            best[row["pk"]] = row
    return list(best.values())


def as_pinot(rows: list[dict[str, Any]], pipeline: PipelineSettings) -> tuple[
    dict[str, list[tuple[int, int, tuple[str, ...]]]], dict[GroupKey, Found]
]:  # fmt: skip
    """The two answers verify asks Pinot for: window rows (for the caps) and groups summed over rows."""
    windows: dict[str, list[tuple[int, int, tuple[str, ...]]]] = defaultdict(list)
    found: dict[GroupKey, Found] = {}
    for row in rows:
        rollup = pipeline.rollup(row["rollup_name"])
        dims = tuple(row[d] for d in rollup.dimensions)
        if row["kind"] == "window":  # Pinot groups by each value of the multi-valued source_partitions
            windows[rollup.name] += [(row["window_start"], p, dims) for p in row["source_partitions"]]
        key = (rollup.name, row["window_start"], dims)
        metrics = {m: (row[f"{m}_sum"], row[f"{m}_count"], row[f"{m}_min"], row[f"{m}_max"])
                   for m in pipeline.events.metrics}  # fmt: skip
        have = found.get(key)
        if have is None:
            found[key] = Found(row["event_count"], metrics, float("nan"), bool(row["is_final"]))
            continue
        have.count += row["event_count"]
        for m, (s, c, lo, hi) in metrics.items():
            hs, hc, hlo, hhi = have.metrics[m]
            have.metrics[m] = (hs + s, hc + c, min(hlo, lo), max(hhi, hi))
        have.final = have.final and bool(row["is_final"])
    return windows, found


def verify_rows(rows: list[dict[str, Any]], recs: list[Record], pipeline: PipelineSettings) -> Report:
    recount = Recount(pipeline)
    for rec in recs:
        recount.feed(rec.partition, rec.key, rec.value, rec.timestamp_ms)
    windows, found = as_pinot(rows, pipeline)
    report = Report()
    for rollup in pipeline.rollups:  # a derived roll-up's caps are those of the roll-up it is built from
        compare_rollup(report, recount, rollup, 0, 2**62, windows[pipeline.root_of(rollup).name], found)
    return report


@pytest.mark.parametrize("shards", [0, 3])
def test_the_dataflows_rows_verify_exactly(shards: int) -> None:
    """Per-partition rows and merged ones (windows.merge_shards): the partitions cap their values each on its
    own, and a merged row's source_partitions says which partitions kept its values."""
    pipeline = cfg()
    pipeline = pipeline.model_copy(update={"windows": pipeline.windows.model_copy(update={"merge_shards": shards})})
    recs = workload()
    rows = upserted(run(pipeline, recs, batch_size=9))
    assert any(r["country"] == "__other__" for r in rows), "the caps must bind for this test to mean anything"
    assert any(r["kind"] == "late" for r in rows), "and late corrections must be among the rows"
    for derived in ("tumble_30s", "tumble_60s"):  # final windows, caps and late corrections of the cascade too
        assert any(r["rollup_name"] == derived and r["country"] == "__other__" for r in rows), derived
        assert any(r["rollup_name"] == derived and r["kind"] == "late" for r in rows), derived
    if shards:
        merged = [r for r in rows if r["kind"] == "window"]
        assert all(r["source_partition"] == -1 for r in merged)
        assert any(len(r["source_partitions"]) > 1 for r in merged)
        # the caps differ between partitions: some value has its own row from one partition, not another
        assert any(r["country"] != "__other__" and len(r["source_partitions"]) < 3 for r in merged
                   if r["rollup_name"] == "tumble_10s")  # fmt: skip
    report = verify_rows(rows, recs, pipeline)
    assert report.ok, report.problems[:5]
    assert report.compared == report.equal > 100


def _duplicate_a_window(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sink that publishes one window twice, the second time under another key with other contents."""
    victim = next(
        r for r in rows if r["kind"] == "window" and r["rollup_name"] == "tumble_10s" and r["event_count"] > 2
    )
    twin = {**victim, "pk": victim["pk"] + "-again", "source_partition": victim["source_partition"] + 10,
            "event_count": victim["event_count"] - 1}  # fmt: skip
    return [*rows, twin]


def _keep_an_older_version(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sink (or table) that skips the version check: an earlier, partial value of a window wins."""
    out = []
    done = False
    for r in rows:
        if not done and r["kind"] == "window" and r["event_count"] > 2:
            r = {**r, "event_count": r["event_count"] - 1, "is_final": 0}
            done = True
        out.append(r)
    return out


def _lose_a_row(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A sink that drops a delivery silently."""
    i = next(i for i, r in enumerate(rows) if r["kind"] == "late")
    return rows[:i] + rows[i + 1 :]


def _wrong_max(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    i = next(i for i, r in enumerate(rows) if r["latency_ms_count"] > 0)
    return [*rows[:i], {**rows[i], "latency_ms_max": DBL_MAX}, *rows[i + 1 :]]


@pytest.mark.parametrize(
    ("broken", "finding"),
    [
        (_duplicate_a_window, "count"),
        (_keep_an_older_version, "not final in Pinot"),
        (_lose_a_row, "missing"),
        (_wrong_max, "min/max"),
    ],
)
def test_verify_catches_a_broken_sink(
    broken: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], finding: str
) -> None:
    pipeline = cfg()
    recs = workload()
    rows = broken(upserted(run(pipeline, recs, batch_size=9)))
    report = verify_rows(rows, recs, pipeline)
    assert not report.ok
    assert any(finding in p for p in report.problems), report.problems[:5]


def test_windows_still_open_are_pending_not_compared() -> None:
    pipeline = cfg()
    recs = [r for r in workload() if r.timestamp_ms < BASE + 100_000]  # no closing event at the end
    rows = upserted(run(pipeline, recs[: len(recs) // 3], batch_size=9))  # partition 0 only, no EOF close
    recount = Recount(pipeline)
    for rec in recs[: len(recs) // 3]:
        recount.feed(rec.partition, rec.key, rec.value, rec.timestamp_ms)
    assert not recount.due(pipeline.rollups[0], BASE + 70_000)
    windows, found = as_pinot(rows, pipeline)
    report = Report()
    compare_rollup(report, recount, pipeline.rollups[0], 0, 2**62, windows["tumble_10s"], found)
    assert report.pending_windows > 0


def _with_duplicates(recs: list[Record]) -> list[Record]:
    """Every 10th event of each partition sent again a few messages later (a retrying producer)."""
    out: list[Record] = []
    per_partition: dict[int, int] = defaultdict(int)
    pending: list[Record] = []
    for rec in recs:
        offset = per_partition[rec.partition]
        out.append(Record(rec.partition, offset, rec.timestamp_ms, rec.key, rec.value))
        per_partition[rec.partition] += 1
        if offset % 10 == 3 and b"event_id" in (rec.value or b""):
            pending.append(rec)
        if len(pending) > 3:
            again = pending.pop(0)
            off = per_partition[again.partition]
            out.append(Record(again.partition, off, rec.timestamp_ms, again.key, again.value))
            per_partition[again.partition] += 1
    return sorted(out, key=lambda r: (r.partition, r.offset))


def test_duplicates_are_replayed_by_the_recount_and_verify_exactly() -> None:
    pipeline = cfg()
    recs = _with_duplicates(workload())
    rows = upserted(run(pipeline, recs, batch_size=7))
    recount = Recount(pipeline)
    for rec in recs:
        recount.feed(rec.partition, rec.key, rec.value, rec.timestamp_ms)
    assert recount.duplicates > 50
    report = verify_rows(rows, recs, pipeline)
    assert report.ok, report.problems[:5]


def test_a_live_recount_compares_the_closed_windows_and_leaves_out_later_corrections() -> None:
    """Pinot is ahead of the recount (the dataflow read on): only windows every partition closed within the
    recount are compared, and corrections of events past the recount's end are not counted against it."""
    pipeline = cfg()
    recs = [r for r in workload() if r.timestamp_ms < BASE + 200_000]  # no closing event: a live stream
    rows = upserted(run(pipeline, recs, batch_size=9))
    ends = {p: 250 for p in range(3)}  # the recount stops at offset 250 of each partition (of ~400)
    recount = Recount(pipeline)
    recount.expect(ends)
    for rec in recs:
        if rec.offset < ends[rec.partition]:
            recount.feed(rec.partition, rec.key, rec.value, rec.timestamp_ms)
    read = [r for r in rows if r["kind"] == "window" or r["version"] < 2 * ends[r["source_partition"]]]
    assert len(read) < len(rows), "some corrections must come from past the recount's end"
    windows, found = as_pinot(read, pipeline)
    report = Report()
    for rollup in pipeline.rollups:
        compare_rollup(report, recount, rollup, 0, 2**62, windows[pipeline.root_of(rollup).name], found)
    assert report.ok, report.problems[:5]
    assert report.compared > 20 and report.pending_windows > 0
    everything = Report()  # without leaving the later corrections out, the closed windows differ
    windows, found = as_pinot(rows, pipeline)
    for rollup in pipeline.rollups:
        compare_rollup(everything, recount, rollup, 0, 2**62, windows[pipeline.root_of(rollup).name], found)
    assert not everything.ok


def test_a_live_recount_that_stops_inside_a_block_of_corrections_leaves_out_what_pinot_leaves_out() -> None:
    """A correction row holds the late events of one window and group that met the partition's watermark within
    one block (windows.late_block_s). Late events of one group on both sides of the recount's end, all in one
    block: Pinot's row holds them all, so verify leaves it out (its version is past the end) and, told its key
    (overrun), the recount's share too. Without overrun the two sides differ."""
    pipeline = cfg()
    recs: list[Record] = []
    for p in range(3):
        values = [(BASE + i * 200, event(BASE + i * 200, user=f"u{i}")) for i in range(100)]
        values.append((BASE + 60_000, event(BASE + 60_000)))  # closes every window before 55 s
        for i in range(101, 300):  # late events of one group (tumble_10s [0, 10 s), click, DE), between others
            late = i % 2 == 0
            ts = BASE + 1_000 + i if late else BASE + 60_000 + i
            values.append((BASE + 60_000 + i, event(ts, user=f"x{i % 9}")))
        recs += records(values, partition=p)
    rows = upserted(run(pipeline, recs, batch_size=9))
    ends = {p: 200 for p in range(3)}
    recount = Recount(pipeline)
    recount.expect(ends)
    for rec in recs:
        if rec.offset < ends[rec.partition]:
            recount.feed(rec.partition, rec.key, rec.value, rec.timestamp_ms)
    assert pipeline.windows.late_block_s * 1000 > 300, "every late event in one block"
    read = [r for r in rows if r["kind"] == "window" or r["version"] < 2 * ends[r["source_partition"]]]
    overrun = {r["pk"] for r in rows if r["kind"] == "late" and r not in read}
    assert overrun, "the block's rows hold offsets past the recount's end"
    windows, found = as_pinot(read, pipeline)
    report, unaware = Report(), Report()
    for rollup in pipeline.rollups:
        compare_rollup(report, recount, rollup, 0, 2**62, windows[pipeline.root_of(rollup).name], found, overrun)
        compare_rollup(unaware, recount, rollup, 0, 2**62, windows[pipeline.root_of(rollup).name], found)
    assert report.ok, report.problems[:5]
    assert report.compared >= 4  # both tumbling windows and the sliding ones holding [0, 10 s)
    assert not unaware.ok


def test_overrun_sql_names_the_corrections_past_each_partition_s_end() -> None:
    from livedash.verify.run import overrun_where

    assert overrun_where({}) is None
    assert overrun_where({0: 25, 3: 40}) == (
        '"kind" = \'late\' AND (("source_partition" = 0 AND "version" >= 50) OR '
        '("source_partition" = 3 AND "version" >= 80))'
    )


def test_the_distinct_count_bound_widens_with_the_groups_checked_at_once() -> None:
    from livedash.verify.recount import theta_z

    assert 3.2 < theta_z(1) < 3.4 and 4.3 < theta_z(100) < 4.5 and 5.2 < theta_z(10_000) < 5.4


def test_quantiles_are_checked_on_the_t_digests_pinot_holds() -> None:
    """verify reads the rows' t-digests (the column the dashboard reads) and pools them: a group split over
    many rows passes, and digests of other values (a sink that wrote the wrong column) do not."""
    import random

    import datasketches as ds

    from livedash.pipeline.aggregates import tdigest_bytes
    from livedash.verify.recount import Tally, check_quantiles

    rng = random.Random(7)
    values = [rng.lognormvariate(4, 0.8) for _ in range(20_000)]
    tally = Tally(quantiles=values)

    def digests(vals: list[float], rows: int) -> list[str]:
        out = []
        for i in range(rows):
            kll = ds.kll_doubles_sketch(200)
            for v in vals[i::rows]:
                kll.update(v)
            out.append(tdigest_bytes(kll).hex())
        return out

    key: GroupKey = ("r", 0, ("x",))
    for rows in (1, 5, 40):
        assert check_quantiles(key, tally, digests(values, rows), 200) == []
    wrong = check_quantiles(key, tally, digests([v * 0.3 for v in values], 5), 200)
    assert len(wrong) == 2 and all("true rank" in w for w in wrong), wrong
    unreadable = check_quantiles(key, tally, [*digests(values, 2), "zz"], 200)
    assert len(unreadable) == 1 and "quantile_tdigest is unreadable" in unreadable[0], unreadable
    assert check_quantiles(key, tally, [], 200) == [
        f"{key}: p50: no t-digest holds a value, 20000 events carry one",
        f"{key}: p95: no t-digest holds a value, 20000 events carry one",
    ]


def test_a_quantile_within_the_bound_of_its_true_rank_passes_and_one_beyond_it_is_named() -> None:
    from livedash.verify.recount import quantile_bound, rank_miss

    values = [float(v) for v in range(1000)]
    bound = quantile_bound(200, len(values))
    assert 0.02 < bound < 0.05  # KLL k=200 (twice ~1.3%), two of 100 centroids, one item
    assert rank_miss(values, 0.5, 500.0, bound) is None
    assert rank_miss(values, 0.95, 950.0 + 1000 * bound - 2, bound) is None
    miss = rank_miss(values, 0.95, 950.0 + 1000 * bound + 2, bound)
    assert miss is not None and miss.startswith("p95 ") and "bound" in miss
    assert rank_miss(values, 0.5, 400.0, bound) is not None


def test_a_quantile_read_from_a_digests_32_bit_means_counts_as_the_values_it_rounds() -> None:
    import math

    import datasketches as ds

    from livedash.pipeline.aggregates import tdigest_bytes, tdigest_quantile
    from livedash.verify.recount import quantile_bound, rank_miss

    # Ties at the median (latencies have one decimal): the digest's mean is float32(113.4), just above 113.4.
    values = [41.6, 55.9, 61.9, 64.3, 67.5, 77.2, 90.6, 96.4, 113.4, 113.4, 126.7, 141.8, 151.3, 176.2, 176.5, 227.0]
    kll = ds.kll_doubles_sketch(200)
    for v in values:
        kll.update(v)
    estimate = tdigest_quantile([tdigest_bytes(kll)], 0.5)
    assert estimate is not None and estimate != 113.4 and math.isclose(estimate, 113.4, rel_tol=1e-7)
    assert rank_miss(values, 0.5, estimate, quantile_bound(200, len(values))) is None
    # Still named when the estimate is the next value up, past the bound.
    assert rank_miss(values, 0.5, 126.7, 0.05) is not None
