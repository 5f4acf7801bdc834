"""The pipeline end to end on the real Kafka and Pinot: generated events in, exact aggregates out."""

from __future__ import annotations

import math
import random
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from livedash import generator, prometheus
from livedash.config import Settings
from livedash.pipeline.rows import DBL_MAX
from livedash.verify.recount import Tally, check_quantiles, distinct_bound, quantile_bound, rank_miss
from livedash.wait import poll
from tests.conftest import run_cli
from tests.ground_truth import GroupKey, Truth, ground_truth
from tests.pinot_query import records
from tests.pipeline_harness import Pipeline, close_windows, corrections_due_s, query_all, wait_stable
from tests.sql_spans import read_spans

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
    bound = distinct_bound(exact, lg_k)  # exact below 2 ** lg_k entries; 3 sigma above
    if abs(got["distinct"] - exact) > bound:
        problems.append(f"{key}: distinct users {got['distinct']} vs {exact} (bound {bound:.0f})")
    return problems


def check_percentiles(settings: Settings, table: str, key: GroupKey, truth: Truth, pipeline: Any) -> list[str]:
    """The group's p50 and p95 from its rows' t-digests, pooled as verify and the dashboard pool them, and merged
    inside Pinot (PERCENTILETDIGEST, which reads the SMALL encoding the rows are written in)."""
    rollup = pipeline.rollup(key[0])
    where = " AND ".join(f"{d} = '{v}'" for d, v in zip(rollup.dimensions, key[2], strict=True))
    rows = query_all(settings, f"SELECT quantile_tdigest FROM {table} WHERE rollup_name = '{key[0]}' AND "
                               f"window_start = {key[1]} AND {where} LIMIT 100000")  # fmt: skip
    values = sorted(truth.quantile_values)
    problems = check_quantiles(key, Tally(quantiles=values), (hexed for (hexed,) in rows), pipeline.sketches.kll_k)
    for q in (0.5, 0.95):
        # Merged inside Pinot: the digests' error plus up to 5% of rank near the median once Pinot has
        # re-compressed (compression 100) the digests of many rows.
        sql = (f"SELECT PERCENTILETDIGEST(quantile_tdigest, {q * 100}) FROM {table} "
               f"WHERE rollup_name = '{key[0]}' AND window_start = {key[1]} AND {where}")  # fmt: skip
        in_pinot = query_all(settings, sql)[0][0]
        bound = quantile_bound(pipeline.sketches.kll_k, len(values)) + 0.05
        if in_pinot is None:
            problems.append(f"{key}: tdigest in Pinot p{int(q * 100)}: none")
        elif (miss := rank_miss(values, q, float(in_pinot), bound)) is not None:
            problems.append(f"{key}: tdigest in Pinot {miss}")
    return problems


def longest(prefix: str, char: str = "😀") -> str:
    """A value of the contract's full 256 characters (4-byte emoji by default) that starts with prefix."""
    return prefix + char * (256 - len(prefix))


LONG = {  # values at the contract's 256-character limit, pairs sharing all but their last character
    "country": [longest("", "😀")[:-1] + "A", longest("", "😀")[:-1] + "B", "漢" * 256],
    "device": [longest("", "é")[:-1] + "1", longest("", "é")[:-1] + "2"],
    "os": ["e\u0301" * 128, "👩\u200d💻" * 85 + "x"],
    "page": [longest("/p/", "ü")[:-1] + str(k) for k in range(3)],
    "referrer": [longest("", "ß")[:-1] + str(k) for k in range(2)],
    "campaign": [longest("c-", "漢"), None],  # None: absent, "__none__" in every table
}


def long_value_events(n: int, start_ms: int, end_ms: int, seed: int = 3) -> list[dict[str, Any]]:
    """n valid events whose dimensions (and ids) are at the 256-character limit, in [start_ms, end_ms)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        event: dict[str, Any] = {"event_id": longest(f"L{i}-"), "ts": rng.randrange(start_ms, end_ms),
                                 "type": rng.choice(["page_view", "click", "purchase"]),
                                 "user_id": longest(f"u{i % 50}-", "ö")}  # fmt: skip
        for dim, values in LONG.items():
            value = rng.choice(values)
            if value is not None:
                event[dim] = value
        if i % 3:
            event["latency_ms"] = float(rng.randrange(1, 5_000))
        if event["type"] == "purchase":
            event["amount"] = round(rng.uniform(1, 500), 2)
        out.append(event)
    return out


def check_raw_agrees_with_rollups(settings: Settings, p: Pipeline, events: list[dict[str, Any]]) -> dict[str, int]:
    """Once final: the raw-events table holds exactly the events counted, and for a range and several filters its
    COUNT(*) equals SUM(event_count) of the roll-ups."""
    n = len(events)
    raw_total = f"SELECT COUNT(*) FROM {p.events}"
    assert wait_stable(lambda: int(query_all(settings, raw_total)[0][0]), n, timeout_s=120) == n
    times = sorted(e["ts"] for e in events)
    lo, hi = times[len(times) // 10], times[-len(times) // 10]  # a range inside the stream
    cases = [("geo_10s", {}), ("geo_10s", {"type": "click"}), ("geo_10s", {"country": LONG["country"][0]}),
             ("geo_10s", {"country": "DE", "device": "mobile"}), ("page_1m", {"page": LONG["page"][1]}),
             ("page_1m", {"referrer": "google"}), ("campaign_15m", {"campaign": "__none__"})]  # fmt: skip

    # Pinot 0.11 can hide upserted rows for a moment while it swaps a committed segment in (as in run_and_check's
    # group comparison), and late corrections follow final rows: look again for a while; the last look must be
    # exact.
    def look() -> tuple[dict[str, int], list[Any]]:
        seen, wrong = {}, []
        for rollup, filters in cases:
            cond = "".join(f" AND \"{d}\" = '{v}'" for d, v in filters.items())
            size = settings.pipeline.rollup(rollup).window.size_s * 1000
            a, b = lo - lo % size + size, hi - hi % size  # whole windows inside the stream, else all of it
            a, b = (a, b) if b > a else (0, 2**62)
            raw = query_all(settings, f'SELECT COUNT(*) FROM {p.events} WHERE "ts" >= {a} AND "ts" < {b}{cond}')
            rolled = query_all(settings, f"SELECT SUM(event_count) FROM {p.table} WHERE rollup_name = '{rollup}' "
                                         f'AND "window_start" >= {a} AND "window_start" < {b}{cond}')  # fmt: skip
            want = sum(1 for e in events if a <= e["ts"] < b
                       and all(e.get(d, "__none__") == v for d, v in filters.items()))  # fmt: skip
            if not int(raw[0][0]) == int(rolled[0][0] or 0) == want:
                wrong.append((rollup, filters, raw, rolled, want))
            seen[f"{rollup}{sorted(filters)}"] = want
        return seen, wrong

    seen, wrong = poll(look, corrections_due_s(settings) + 40, every_s=3, done=lambda found: not found[1])
    assert not wrong, wrong
    assert all(v > 0 for v in seen.values()), seen
    return seen


IDLE_AND_SLACK_MS = 70_000  # a quiet partition's watermark moves on 10 s after its last input; the rest: publication


def derived_due(pipeline: Any, lateness_ms: int, horizon_ms: int = 0) -> Any:
    """Which groups Pinot must hold by now: every window of a roll-up published while open (its running value
    shows at once), but a final-only roll-up's (derived by the cascade, or live from a finer one) only once
    final, which takes its end plus the lateness past the partitions' watermarks: the closing events' time
    (horizon_ms, close_windows), or the clock once they are quiet."""
    now = time.time() * 1000

    def due(key: GroupKey) -> bool:
        rollup = pipeline.rollup(key[0])
        end = key[1] + rollup.window.size_s * 1000 + lateness_ms
        return not pipeline.final_only(rollup) or end <= horizon_ms or end + IDLE_AND_SLACK_MS <= now

    return due


def derived_windows(settings: Settings, table: str, pipeline: Any) -> set[tuple[str, int]]:
    """(roll-up, window start) of the final-only roll-ups' window rows in Pinot (not their late corrections,
    which a window not yet final may already have: events late for its finer windows)."""
    names = ", ".join(f"'{r.name}'" for r in pipeline.rollups if pipeline.final_only(r))
    sql = (f"SELECT rollup_name, window_start FROM {table} WHERE kind = 'window' AND rollup_name IN ({names}) "
           "GROUP BY rollup_name, window_start LIMIT 100000")  # fmt: skip
    return {(str(name), int(ws)) for name, ws in query_all(settings, sql)}


def compare(settings: Settings, table: str, pipeline: Any, truth: dict[GroupKey, Truth],
            due: Any, final_by: Any) -> tuple[list[GroupKey], list[GroupKey], list[str]]:  # fmt: skip
    """Pinot's groups against the truth: the groups due missing, groups no event belongs to, and the differences
    of the groups due; and a final-only window published while it could not be final yet (final_by: the window
    end plus lateness it needs, against the partitions' watermarks) is a difference too."""
    got = pinot_groups(settings, table, pipeline)
    problems = [msg for key, t in truth.items() if key in got and due(key)
                for msg in check_group(key, t, got[key], pipeline.sketches.theta_lg_k)]  # fmt: skip
    problems += [f"{name} window {ws}: published before it could be final"
                 for name, ws in derived_windows(settings, table, pipeline) if not final_by(name, ws)]  # fmt: skip
    missing = sorted(k for k in set(truth) - set(got) if due(k))
    return missing, sorted(set(got) - set(truth)), problems


def run_and_check(stack: Settings, tmp_path: Path, count: int, kills: int, long_values: int = 0) -> dict[str, Any]:
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
        if long_values:  # mixed into the same windows: some on time, some late (corrections keyed by them)
            start, end = min(e["ts"] for e in events), max(e["ts"] for e in events)
            extra = long_value_events(long_values, start, end)
            from confluent_kafka import Producer

            producer = Producer({"bootstrap.servers": stack.kafka.bootstrap})
            for event in extra:
                producer.produce(p.raw, key=event["user_id"].encode(), value=orjson.dumps(event))
            assert producer.flush(30) == 0
            events += extra
            figures["long_values"] = long_values
        # Past the end of every window of the roll-ups published final only (page_15m: 15 minutes), so that their
        # one final row each is compared too (the hours and days derived from them stay open)
        lateness = p.lateness_s * 1000
        longest = max(r.window.size_s for r in pipeline.rollups if r.live_from is not None) * 1000
        horizon = max(e["ts"] for e in events) + longest + lateness + 10_000
        events += close_windows(stack, p.raw, horizon, p.suffix)
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
        # in (these tests commit segments as they go), and late corrections follow final rows, so look again for
        # a while; the last look must be exact.
        looks = 0

        def look() -> tuple[list[GroupKey], list[GroupKey], list[str]]:
            nonlocal looks
            looks += 1

            def final_by(name: str, ws: int) -> bool:  # the closing events or the clock past the end and lateness
                end = ws + pipeline.rollup(name).window.size_s * 1000 + lateness
                return end <= max(horizon, time.time() * 1000)

            return compare(settings, p.table, pipeline, truth, derived_due(pipeline, lateness, horizon), final_by)

        missing, extra, problems = poll(look, corrections_due_s(settings) + 40, every_s=3,
                                        done=lambda found: not any(found))  # fmt: skip
        if looks > 1:
            figures["looks"] = looks
        assert not missing and not extra, (missing[:5], extra[:5])
        assert not problems, problems[:10]
        due = derived_due(pipeline, lateness, horizon)
        busiest = sorted((k for k in truth if truth[k].quantile_values and due(k)), key=lambda k: -truth[k].count)
        sample = [k for r in pipeline.rollups for k in [k for k in busiest if k[0] == r.name][:5]]
        problems = [m for k in sample for m in check_percentiles(settings, p.table, k, truth[k], pipeline)]
        assert not problems, problems
        late = p.distinct_sources(p.late)
        assert late > 0, "the generator sent events minutes behind: some must be late"
        figures["raw_vs_rollups"] = check_raw_agrees_with_rollups(settings, p, events)
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
            broken = wait_stable(lambda: run_verify(p, settle_s=0).returncode, 1, timeout_s=60, quiet_s=0)
            assert broken == 1, f"verify did not notice the duplicated row {twin}"
            assert "NOT exact" in run_verify(p).stdout  # and looking again for a while does not change that
        return figures
    finally:
        p.stop()
        p.drop()


VERIFY_HOURS = 3  # run_verify's range: the last this many hours


def run_verify(p: Pipeline, settle_s: float | None = None) -> Any:
    """settle_s: how long verify looks again at differences (0 where a difference is planted on purpose); by
    default as long as late corrections can follow final rows, and a margin."""
    settle = corrections_due_s(p.settings()) + 10 if settle_s is None else settle_s
    return run_cli("verify", "--from", f"now-{VERIFY_HOURS}h", "--from-beginning", "--quiet", "--settle", str(settle),
                   env=p.env(), timeout=300)  # fmt: skip


def duplicate_a_final_row(settings: Settings, p: Pipeline) -> str:
    """Publish one final window row again under another primary key, as a broken sink would. The row's window
    starts inside run_verify's range: verify compares the windows that start in it only, and near midnight the
    earliest final window is the day before's (its day window closes when the test's horizon passes 00:05)."""
    from confluent_kafka import Producer

    since = int(time.time() * 1000) - VERIFY_HOURS * 3_600_000 + 600_000  # ten minutes' margin for the verify's start
    sql = (f"SELECT * FROM {p.table} WHERE kind = 'window' AND is_final = 1 AND event_count > 1 "
           f"AND window_start >= {since} ORDER BY window_start LIMIT 1")  # fmt: skip
    twin = records(settings, sql, timeout_s=30)[0]
    twin["pk"] = twin["pk"] + "-twin"
    twin["event_count"] = int(twin["event_count"]) - 1
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap})
    producer.produce(p.table, key=twin["pk"].encode(), value=orjson.dumps(twin))
    assert producer.flush(10) == 0
    return str(twin["pk"])


def test_200k_generated_events_and_3k_at_the_length_limit_match_ground_truth(stack: Settings, tmp_path: Path) -> None:
    figures = run_and_check(stack, tmp_path, 200_000, kills=0, long_values=3_000)
    print(f"pipeline figures: {figures}")


def test_a_backfill_two_days_old_fills_hours_and_days_from_the_finer_windows_exactly(
    stack: Settings, tmp_path: Path
) -> None:
    """Two hours of generated events around midnight two days ago (late, out-of-order and malformed ones among
    them): the recent tier publishes nothing that old, and the history tier's roll-ups, with the hours and days
    derived from them (the cascade), match the ground truth group by group; every derived row is final and was
    published once (no provisional version in Pinot); `livedash verify` over the range agrees."""
    day, hour = 86_400_000, 3_600_000
    now = int(time.time() * 1000)
    midnight = now - now % day - day  # two days ago or a little less: both days end before now
    start, end = midnight - hour, midnight + hour
    n = 30_000
    opts = generator.GeneratorOptions(seed=5, users=5_000, malformed_fraction=0.01,
                                      nominal_rate=n / 7200 / generator.mean_rate(generator.GeneratorOptions(
                                          nominal_rate=1.0), start / 1000, end / 1000))  # fmt: skip
    p = Pipeline(stack, template="aggregates_history")
    p.create()
    settings = p.settings()
    pipeline = settings.pipeline
    try:
        truth_file = tmp_path / "truth.jsonl"
        sent = generator.run(stack.kafka.bootstrap, p.raw, n, None, 0, opts, truth=truth_file, progress=False,
                             start_ms=start)  # fmt: skip
        events = [orjson.loads(line) for line in truth_file.read_bytes().splitlines()]
        assert len(events) + sent.malformed == n and max(e["ts"] for e in events) > midnight > min(
            e["ts"] for e in events
        )
        # One event per partition 5 minutes past the end: every partition's watermark passes the last hour's end
        # plus the lateness
        events += close_windows(stack, p.raw, end + 300_000, p.suffix)
        p.start_dataflow()
        history = [r for r in pipeline.rollups if r.tier == "history"]
        # published once, final: derived, live from a finer roll-up, or with running rows in the live table only
        # (whose hour a backfill two days old is not in: campaign_15m)
        derived = {r.name for r in history if pipeline.final_only(r) or pipeline.has_running_rows(r)}
        assert {"type_1h", "geo_1d", "page_1d", "campaign_1h", "geo_5m", "page_15m", "campaign_15m"} <= derived
        truth = {k: t for k, t in ground_truth(events, pipeline).items() if k[0] in {r.name for r in history}}
        assert sum(t.count for k, t in truth.items() if k[0] == "geo_1h" and k[1] < end) == len(events) - 4
        assert {k[1] for k in truth if k[0] == "geo_1d"} == {midnight - day, midnight}

        # A derived window is final once the partitions' watermarks pass its end plus the lateness: the data
        # reaches an hour past midnight, and a quiet partition's watermark then moves at the clock's pace from
        # there, so every window but the day after midnight is final within a minute; that day stays open (only
        # its corrections may show: events late for its finer windows)
        def final_by(name: str, ws: int) -> bool:
            return ws + pipeline.rollup(name).window.size_s * 1000 <= end

        def due(key: GroupKey) -> bool:
            return key[0] not in derived or final_by(key[0], key[1])

        def look() -> tuple[list[GroupKey], list[GroupKey], list[str]]:
            return compare(settings, p.table, pipeline, truth, due, final_by)

        missing, extra, problems = poll(look, 240, every_s=3, done=lambda found: not any(found))
        assert not missing and not extra, (missing[:5], extra[:5])
        assert not problems, problems[:10]
        days = {ws for name, ws in derived_windows(settings, p.table, pipeline) if name == "geo_1d"}
        assert days == {midnight - day}, days  # the day before midnight final, the day after still open
        names = ", ".join(f"'{name}'" for name in sorted(derived))
        where = f"rollup_name IN ({names}) AND kind = 'window'"
        kept = query_all(settings, f"SELECT COUNT(*), MIN(is_final) FROM {p.table} WHERE {where}")[0]
        every = query_all(settings, f"SELECT COUNT(*) FROM {p.table} WHERE {where} OPTION(skipUpsert=true)")[0]
        assert int(kept[0]) > 100 and int(kept[1]) == 1 and int(every[0]) == int(kept[0]), (kept, every)
        recent = [r.name for r in pipeline.rollups if r.tier == "recent"]
        older = query_all(settings, f"SELECT COUNT(*) FROM {p.table} WHERE rollup_name IN "
                                    f"({', '.join(repr(r) for r in recent)})")[0][0]  # fmt: skip
        assert int(older) == 0, "the recent tier keeps 3 hours: nothing two days old is published there"
        late = p.distinct_sources(p.late)
        assert late > 0, "the generator sent events minutes behind: some must be late"
        verified = run_cli(
            "verify",
            "--from",
            str(midnight - day),
            "--to",
            str(end),
            "--from-beginning",
            "--quiet",
            env=p.env(),
            timeout=300,
        )  # fmt: skip (from the first day's start: its day is compared)
        assert verified.returncode == 0, verified.stdout[-3000:] + verified.stderr[-2000:]
        lines = dict(re.findall(r"^(\w+): (\d+) groups compared", verified.stdout, re.MULTILINE))
        assert all(int(lines[name]) > 0 for name in derived), lines
        # The dashboard's view of the 24 hours ending an hour after that midnight: hours from type_1h and geo_1h
        # up to the newest one published (the probe), then 5-minute windows, merged from pieces on real Pinot
        from dashboard import query as q
        from dashboard.panels import fetch
        from livedash.pinot.client import PinotClient, QueryService, Result

        catalog = q.Catalog.from_settings(pipeline)
        client = PinotClient.of(settings.pinot)
        statements: list[str] = []

        def run(sql: str) -> Result:
            statements.append(sql)
            return client.query(sql)

        service = QueryService(run)
        view = {
            n: sql for n, sql in q.overview(catalog, end - day, end, {}, now).items() if n in ("totals", "top country")
        }
        levels = view["totals"].stitch.levels  # type: ignore[union-attr]
        assert [lv.name for lv in levels] == ["type_1h", "type_5m", "type_10s"]
        out = fetch(service, view, ttl_s=5)
        totals, top = out[view["totals"].text], out[view["top country"].text]
        assert isinstance(totals, Result) and isinstance(top, Result), (totals, top)
        in_view = [e for e in events if e["ts"] < end]  # the closing events are past the view's end
        assert int(totals.rows[0][0]) == len(in_view) == len(events) - 4
        countries: dict[str, int] = defaultdict(int)
        for e in in_view:
            countries[e.get("country", "__none__")] += 1
        shown = {c: int(n) for c, n in top.rows}  # the top values (a tie at the cut may bring in another)
        assert all(countries[c] == n for c, n in shown.items()) and len(shown) == min(10, len(countries))
        assert sorted(shown.values()) == sorted(countries.values())[-len(shown) :]
        read = " ".join(statements)
        hours_from = end - day  # the first whole hour of the range: the probe found type_1h published to midnight
        hours = [span for t in statements for span in read_spans(t, pipeline).get("type_1h", [])]
        assert 'MAX("window_start")' in read and hours == [(hours_from, midnight)], read[:3000]
        print(f"backfill figures: {len(events)} events, {late} late, {len(truth)} groups, derived rows {kept[0]}; "
              f"{summary(verified.stdout)}")  # fmt: skip
    finally:
        p.stop()
        p.drop()


def summary(stdout: str) -> str:
    return next((line for line in stdout.splitlines() if line.startswith("verify: ") and "groups compared" in line),
                stdout[-300:])  # fmt: skip


def test_kill9_three_times_mid_window_with_values_at_the_limit_is_still_exact(stack: Settings, tmp_path: Path) -> None:
    figures = run_and_check(stack, tmp_path, 120_000, kills=3, long_values=500)
    print(f"recovery figures: {figures}")


def test_the_longest_legal_rows_round_trip_through_every_table(stack: Settings) -> None:
    """Every string the contract accepts at its longest (256 characters of 4-byte emoji: 1,024 bytes, 512 UTF-16
    units) and the longest roll-up name, through the dataflow into the aggregates and raw-events tables: every
    column comes back whole, and values that differ only in their last character stay apart."""
    from confluent_kafka import Producer

    name = "r" * 63  # the longest roll-up name config accepts
    dims = ["type", "country", "device", "os", "page", "referrer", "campaign"]
    p = Pipeline(stack, extra_env={"LIVEDASH_PIPELINE__ROLLUPS": orjson.dumps(
        [{"name": name, "dimensions": dims, "window": {"size_s": 60}}]).decode()})  # fmt: skip
    p.create()
    now = int(time.time() * 1000)
    events = []
    for i in range(40):  # 2 x 2 variants per dimension that share their first 255 characters
        event = {"event_id": longest(f"id{i}-"), "ts": now - 1_000 + i, "type": "click", "user_id": longest(f"u{i}-")}
        for d in dims[1:]:
            event[d] = longest("", "😀")[:-1] + ("A" if (i >> dims.index(d)) % 2 else "B")
        event["latency_ms"] = float(i)
        events.append(event)
    producer = Producer({"bootstrap.servers": stack.kafka.bootstrap})
    for event in events:
        producer.produce(p.raw, key=event["user_id"].encode(), value=orjson.dumps(event))
    assert producer.flush(30) == 0
    try:
        p.start_dataflow()
        settings = p.settings()
        total = f"SELECT SUM(event_count) FROM {p.table}"
        n = len(events)
        assert wait_stable(lambda: query_all(settings, total)[0][0], n, timeout_s=120) == n
        rows = records(settings, f"SELECT * FROM {p.table} LIMIT 1000", timeout_s=30)
        groups = {tuple(e[d] for d in dims) for e in events}
        assert {tuple(r[d] for d in dims) for r in rows} == groups  # whole values, none cut or merged
        assert all(r["rollup_name"] == name and len(r["pk"]) == 32 for r in rows)
        assert sum(int(r["event_count"]) for r in rows) == len(events)
        raw_sql = f"SELECT event_id, user_id, {', '.join(dims)} FROM {p.events} LIMIT 1000"
        assert wait_stable(lambda: len(query_all(settings, raw_sql)), n) == n
        got = {tuple(row) for row in query_all(settings, raw_sql)}
        assert got == {(e["event_id"], e["user_id"], *(e[d] for d in dims)) for e in events}
    finally:
        p.stop()
        p.drop()


def test_a_live_pipeline_counts_duplicates_once_across_kill9_and_verifies_while_events_arrive(stack: Settings) -> None:
    """While the generator keeps sending: 1,000 events are each sent twice, seconds apart, and the dataflow is
    killed twice meanwhile. `livedash verify --from now-10m` passes on the live pipeline, saying how many windows
    it left out; once the input stops, every duplicate was counted once everywhere (roll-ups, raw table) and the
    duplicates metric, restored from the snapshots after each kill, says 1,000."""
    import signal
    import subprocess
    import sys
    import threading

    from confluent_kafka import Producer

    from tests.conftest import ROOT, free_port
    from tests.integration.test_faults import close_all_windows, summary_line, verify_when_final

    p = Pipeline(stack)
    p.create()
    settings = p.settings()
    port = free_port()
    dups = 1_000
    cmd = [sys.executable, "-m", "livedash.cli", "generate", "--duration", "240", "--rate", "2000", "--topic", p.raw,
           "--seed", "9", "--quiet"]  # fmt: skip
    generator_proc: subprocess.Popen[bytes] | None = None
    sender_error: list[BaseException] = []

    def send_twice() -> None:
        """Each event again 2-4 s after its first copy, same key, same bytes: a producer retrying."""
        try:
            producer = Producer({"bootstrap.servers": stack.kafka.bootstrap, "linger.ms": 5})
            rng = random.Random(5)
            again: list[tuple[float, bytes, bytes]] = []
            for i in range(dups):
                user = f"dup-user-{i % 97}".encode()
                value = orjson.dumps({"event_id": f"dup-{p.suffix}-{i}", "ts": int(time.time() * 1000),
                                      "type": "click", "user_id": user.decode(), "country": "DE"})  # fmt: skip
                producer.produce(p.raw, key=user, value=value)
                again.append((time.monotonic() + rng.uniform(2, 4), user, value))
                for due, key, val in [a for a in again if a[0] <= time.monotonic()]:
                    producer.produce(p.raw, key=key, value=val)
                    again.remove((due, key, val))
                producer.poll(0)
                time.sleep(0.045)  # 1,000 over ~45 s, across both kills
            for due, key, val in sorted(again):
                time.sleep(max(0.0, due - time.monotonic()))
                producer.produce(p.raw, key=key, value=val)
            assert producer.flush(30) == 0
        except BaseException as exc:  # surfaced by the test thread
            sender_error.append(exc)

    try:
        proc = p.start_dataflow(metrics_port=port)
        t0 = time.monotonic()
        generator_proc = subprocess.Popen(cmd, cwd=ROOT, env=p.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        sender = threading.Thread(target=send_twice)
        sender.start()
        for run in range(2):
            log = p.log_file(run)
            if run:
                working = lambda log=log: log.exists() and "restored from snapshot" in log.read_text()  # noqa: E731
            else:
                working = lambda: p.topic_size(p.table) > 0 and p.committed_epoch() > 1  # noqa: E731
            assert wait_stable(working, True, timeout_s=120, quiet_s=0), f"dataflow run {run} did not start"
            time.sleep(8)
            p.kill9(proc)
            proc = p.start_dataflow(metrics_port=port)
        restored = lambda: "restored from snapshot" in p.log_file(2).read_text()  # noqa: E731
        assert wait_stable(restored, True, timeout_s=120, quiet_s=0)
        # Live: windows close 30 s after their end (the harness's lateness), so wait until some have.
        time.sleep(max(0.0, 50 - (time.monotonic() - t0)))
        began = time.monotonic() - t0
        live = run_cli("verify", "--from", "now-10m", "--quiet", env=p.env(), timeout=300)
        took = time.monotonic() - t0 - began
        still_sending = generator_proc.poll() is None
        assert live.returncode == 0, live.stdout[-3000:] + live.stderr[-1000:]
        assert still_sending, "verify must have run while the generator was sending"
        line = summary_line(live.stdout)
        compared, left_out = (int(re.search(rf"(\d+) {w}", line).group(1))  # type: ignore[union-attr]
                              for w in ("groups compared", "windows not final yet"))  # fmt: skip
        assert compared > 0 and left_out > 0, line
        sender.join(timeout=120)
        assert not sender.is_alive() and not sender_error, sender_error
        generator_proc.send_signal(signal.SIGTERM)  # stops as Ctrl-C does: what it counted is delivered
        out, _ = generator_proc.communicate(timeout=60)
        assert generator_proc.returncode == 0, out[-2000:]
        close_all_windows(stack, p.raw)
        final = verify_when_final(p, timeout_s=300)
        assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-1000:]
        assert f"{dups:,} duplicates" in final.stdout, final.stdout[-2000:]  # the recount saw them too
        metrics = prometheus.scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=10)
        dropped = prometheus.total(metrics, "livedash_events_duplicate_total")
        assert dropped == dups, dropped
        raw_dups = f"SELECT COUNT(*) FROM {p.events} WHERE REGEXP_LIKE(event_id, '^dup-')"
        assert wait_stable(lambda: int(query_all(settings, raw_dups)[0][0]), dups, timeout_s=60) == dups
        raw_all = f"SELECT COUNT(*) FROM {p.events}"
        rolled = f"SELECT SUM(event_count) FROM {p.table} WHERE rollup_name = 'geo_10s'"
        total = int(query_all(settings, rolled)[0][0])
        assert wait_stable(lambda: int(query_all(settings, raw_all)[0][0]), total, timeout_s=60) == total
        print(f"live figures: verify at {began:.0f} s took {took:.0f} s, while sending: {line}; after: "
              f"{summary_line(final.stdout)}; "
              f"duplicates dropped {dropped:.0f}; raw = roll-ups = {total}")  # fmt: skip
    finally:
        if generator_proc is not None and generator_proc.poll() is None:
            generator_proc.kill()
        p.stop()
        p.drop()
