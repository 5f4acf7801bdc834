"""The pipeline end to end on the real Kafka and Pinot: generated events in, exact aggregates out."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import datasketches as ds
import orjson
import pytest

from livedash import generator
from livedash.config import Settings
from livedash.pipeline.aggregate import DBL_MAX
from tests.conftest import run_cli
from tests.ground_truth import GroupKey, Truth, ground_truth
from tests.pipeline_harness import Pipeline, query_all, wait_stable

pytestmark = pytest.mark.slow


def pinot_groups(settings: Settings, table: str, pipeline: Any) -> dict[GroupKey, dict[str, Any]]:
    out = {}
    for rollup in pipeline.rollups:
        dims = ", ".join(rollup.dimensions)
        sql = (
            f"SELECT window_start, {dims}, SUM(event_count), SUM(latency_ms_sum), SUM(latency_ms_count), "
            "MIN(latency_ms_min), MAX(latency_ms_max), SUM(amount_sum), SUM(amount_count), MIN(amount_min), "
            f"MAX(amount_max), DISTINCTCOUNTTHETASKETCH(distinct_theta) FROM {table} "
            f"WHERE rollup_name = '{rollup.name}' GROUP BY window_start, {dims} LIMIT 1000000"
        )
        for row in query_all(settings, sql):
            n = len(rollup.dimensions)
            key = (rollup.name, int(row[0]), tuple(row[1 : 1 + n]))
            v = row[1 + n :]
            out[key] = {
                "count": int(v[0]),
                "latency_ms": (v[1], int(v[2]), v[3], v[4]),
                "amount": (v[5], int(v[6]), v[7], v[8]),
                "distinct": int(v[9]),
            }
    return out


def check_group(key: GroupKey, truth: Truth, got: dict[str, Any], lg_k: int) -> list[str]:
    problems = []
    if got["count"] != truth.count:
        problems.append(f"{key}: count {got['count']} != {truth.count}")
    for metric in ("latency_ms", "amount"):
        s, c, lo, hi = got[metric]
        if c != truth.counts.get(metric, 0):
            problems.append(f"{key}: {metric} count {c} != {truth.counts.get(metric, 0)}")
        if not math.isclose(s, truth.sums.get(metric, 0.0), rel_tol=1e-9, abs_tol=1e-6):
            problems.append(f"{key}: {metric} sum {s} != {truth.sums.get(metric, 0.0)}")
        if c and (lo != truth.mins[metric] or hi != truth.maxs[metric]):
            problems.append(f"{key}: {metric} min/max {lo}/{hi} != {truth.mins[metric]}/{truth.maxs[metric]}")
        if not c and (lo != DBL_MAX or hi != -DBL_MAX):
            problems.append(f"{key}: {metric} min/max without values {lo}/{hi}")
    exact = len(truth.users)
    k = 2**lg_k
    bound = 0 if exact < k else 3 * exact / math.sqrt(k)  # exact below k entries; 3 sigma above
    if abs(got["distinct"] - exact) > bound:
        problems.append(f"{key}: distinct users {got['distinct']} vs {exact} (bound {bound:.0f})")
    return problems


def check_percentiles(settings: Settings, table: str, key: GroupKey, truth: Truth, pipeline: Any) -> list[str]:
    rollup = pipeline.rollup(key[0])
    where = " AND ".join(f"{d} = '{v}'" for d, v in zip(rollup.dimensions, key[2], strict=True))
    rows = query_all(settings, f"SELECT quantile_kll FROM {table} WHERE rollup_name = '{key[0]}' AND "
                               f"window_start = {key[1]} AND {where} LIMIT 100000")  # fmt: skip
    merged = ds.kll_doubles_sketch(pipeline.sketches.kll_k)
    for (hexed,) in rows:
        merged.merge(ds.kll_doubles_sketch.deserialize(bytes.fromhex(hexed)))
    values = sorted(truth.quantile_values)
    eps = 2 * ds.kll_doubles_sketch.get_normalized_rank_error(pipeline.sketches.kll_k, False) + 1 / len(values)
    problems = []
    for q in (0.5, 0.95):
        est = merged.get_quantile(q)
        # And merged inside Pinot, from the t-digest column: KLL's error plus the digest's own, up to 5% of rank
        # near the median once Pinot has re-compressed (compression 100) the digests of many rows.
        sql = (f"SELECT PERCENTILETDIGEST(quantile_tdigest, {q * 100}) FROM {table} "
               f"WHERE rollup_name = '{key[0]}' AND window_start = {key[1]} AND {where}")  # fmt: skip
        in_pinot = float(query_all(settings, sql)[0][0])
        for name, value, bound in (("kll", est, eps), ("tdigest in Pinot", in_pinot, eps + 0.05)):
            lo = sum(1 for v in values if v < value) / len(values)
            hi = sum(1 for v in values if v <= value) / len(values)
            if not (lo - bound <= q <= hi + bound):
                problems.append(f"{key}: {name} p{int(q * 100)} {value} has true rank [{lo:.3f}, {hi:.3f}], "
                                f"bound {bound:.3f}")  # fmt: skip
    return problems


def run_and_check(stack: Settings, tmp_path: Path, count: int, kills: int) -> dict[str, Any]:
    p = Pipeline(stack)
    p.create()
    settings = p.settings()
    pipeline = settings.pipeline
    truth_file = tmp_path / "truth.jsonl"
    opts = generator.GeneratorOptions(seed=42, users=20_000, out_of_order_fraction=0.05, late_fraction=0.01,
                                      malformed_fraction=0.01)  # fmt: skip
    figures: dict[str, Any] = {}
    try:
        proc = p.start_dataflow()
        if kills:
            # Paced input so the dataflow is mid-window when it dies; kill -9 at random moments.
            rate = count / 40
            import threading

            sent: dict[str, Any] = {}
            producer = threading.Thread(target=lambda: sent.update(summary=generator.run(
                stack.kafka.bootstrap, p.raw, count, None, rate, opts, truth=truth_file, progress=False)))  # fmt: skip
            producer.start()
            rng = random.Random(7)
            total_sql = f"SELECT SUM(event_count) FROM {p.table} WHERE rollup_name = 'geo_10s'"
            for run in range(kills):
                # Let the process get going (first output, or its restore from the snapshot), then kill it at a
                # random moment: mid-window, with output published since its last snapshot.
                if run == 0:
                    warm = wait_stable(lambda: (query_all(settings, total_sql)[0][0] or 0) > 0, True, quiet_s=0)
                else:
                    warm = wait_stable(lambda r=run: "restored from snapshot" in p.log_file(r).read_text(), True,
                                       quiet_s=0)  # fmt: skip
                assert warm is True, f"dataflow run {run} did not start working"
                time.sleep(rng.uniform(2, 5))
                p.kill9(proc)
                proc = p.start_dataflow()
            producer.join()
            summary = sent["summary"]
        else:
            summary = generator.run(stack.kafka.bootstrap, p.raw, count, None, 0, opts, truth=truth_file,
                                    progress=False)  # fmt: skip
        events = [orjson.loads(line) for line in truth_file.read_bytes().splitlines()]
        assert len(events) + summary.malformed == count
        truth = ground_truth(events, pipeline)

        t0 = time.monotonic()
        total_sql = f"SELECT SUM(event_count) FROM {p.table} WHERE rollup_name = 'geo_10s'"
        drained = wait_stable(lambda: int(query_all(settings, total_sql)[0][0]), len(events), timeout_s=300)
        figures["drain_s"] = round(time.monotonic() - t0, 1)
        assert drained == len(events)
        # Every malformed message is dead-lettered once per source offset (a replay after kill -9 may repeat one).
        dead = wait_stable(lambda: p.distinct_sources(p.dead_letter), summary.malformed, timeout_s=60)
        assert dead == summary.malformed
        if not kills:
            assert p.topic_size(p.dead_letter) == summary.malformed

        # Compare every group. Pinot 0.11 can hide upserted rows for a moment while it swaps a committed segment
        # in (these tests commit segments as they go), so look again for up to a minute; the last look must
        # be exact.
        deadline = time.monotonic() + 60
        while True:
            got = pinot_groups(settings, p.table, pipeline)
            missing, extra = sorted(set(truth) - set(got)), sorted(set(got) - set(truth))
            problems = [msg for key, t in truth.items() if key in got
                        for msg in check_group(key, t, got[key], pipeline.sketches.theta_lg_k)]  # fmt: skip
            if (not missing and not extra and not problems) or time.monotonic() > deadline:
                break
            figures["looks"] = figures.get("looks", 1) + 1
            time.sleep(3)
        assert not missing and not extra, (missing[:5], extra[:5])
        assert not problems, problems[:10]
        busiest = sorted((k for k in truth if truth[k].quantile_values), key=lambda k: -truth[k].count)
        sample = [k for r in pipeline.rollups for k in [k for k in busiest if k[0] == r.name][:5]]
        problems = [m for k in sample for m in check_percentiles(settings, p.table, k, truth[k], pipeline)]
        assert not problems, problems
        late = p.distinct_sources(p.late)
        assert late > 0, "the generator sent events minutes behind: some must be late"
        figures.update(
            events=count,
            valid=len(events),
            malformed=summary.malformed,
            late=late,
            groups=len(truth),
            dead_letter_messages=p.topic_size(p.dead_letter),
        )
        if kills:  # each restart resumed from its snapshot, not from the start of the topic
            figures["restores"] = [p.log_file(i).read_text().count("restored from snapshot") for i in range(kills + 1)]
            assert all(n > 0 for n in figures["restores"][1:]), figures
        # `livedash verify` recounts the raw topic on its own and must agree, row by row
        verified = run_verify(p)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
        figures["verify"] = next(line for line in verified.stdout.splitlines() if line.startswith("verify: ") and
                                 "groups compared" in line)  # fmt: skip
        if not kills:
            # ...and it must notice a sink that publishes a window twice under another key
            twin = duplicate_a_final_row(settings, p)
            broken = wait_stable(lambda: run_verify(p).returncode, 1, timeout_s=60, quiet_s=0)
            assert broken == 1, f"verify did not notice the duplicated row {twin}"
            assert "NOT exact" in run_verify(p).stdout
        return figures
    finally:
        p.stop()
        p.drop()


def run_verify(p: Pipeline) -> Any:
    return run_cli("verify", "--from", "now-3h", "--from-beginning", "--quiet", env=p.env(), timeout=300)


def duplicate_a_final_row(settings: Settings, p: Pipeline) -> str:
    """Publish one final window row again under another primary key, as a broken sink would."""
    import requests
    from confluent_kafka import Producer

    sql = (f"SELECT * FROM {p.table} WHERE kind = 'window' AND is_final = 1 AND event_count > 1 "
           "ORDER BY window_start LIMIT 1")  # fmt: skip
    answer = requests.post(f"{settings.pinot.broker_url}/query/sql", json={"sql": sql}, timeout=30).json()
    table = answer["resultTable"]
    twin = dict(zip(table["dataSchema"]["columnNames"], table["rows"][0], strict=True))
    twin["pk"] = twin["pk"] + "-twin"
    twin["event_count"] = int(twin["event_count"]) - 1
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    producer.produce(p.table, key=twin["pk"].encode(), value=orjson.dumps(twin))
    assert producer.flush(10) == 0
    return str(twin["pk"])


def test_200k_generated_events_match_ground_truth(stack: Settings, tmp_path: Path) -> None:
    figures = run_and_check(stack, tmp_path, 200_000, kills=0)
    print(f"pipeline figures: {figures}")


def test_kill9_three_times_mid_window_is_still_exact(stack: Settings, tmp_path: Path) -> None:
    figures = run_and_check(stack, tmp_path, 120_000, kills=3)
    print(f"recovery figures: {figures}")
