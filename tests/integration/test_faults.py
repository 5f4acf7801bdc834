"""Fault scenarios on the real stack (issue 5). Each is bounded in time and uses loopback addresses only; after
each, `livedash verify` must pass. Long ones carry the `faults` marker: `bin/test -m faults` runs them alone."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given, settings

from livedash.config import Settings
from livedash.pipeline.contract import Validator
from livedash.wait import poll
from tests.conftest import run_cli
from tests.malformed import NOW, malformed, odd_unicode_valid, valid_event
from tests.pipeline_harness import (
    Pipeline,
    close_windows,
    closing_events,
    corrections_due_s,
    query_all,
    wait_progressing,
    wait_stable,
)

pytestmark = [pytest.mark.slow, pytest.mark.faults]

BURST = 200_000  # events produced while the dataflow is stopped (scenario 4)
MALFORMED: list[tuple[str, bytes]] = []  # (category, message), collected by the hypothesis run below


CLOSED_AHEAD_MS = 1_800_000  # closing events this far ahead (within max_future_s) close every earlier window;
# verify looks up to now+10m, short of their own windows


def close_every_window(producer: Producer, topic: str) -> int:
    return len(closing_events(producer, topic, NOW + CLOSED_AHEAD_MS, "ahead"))


def close_all_windows(stack: Settings, topic: str) -> None:
    close_windows(stack, topic, NOW + CLOSED_AHEAD_MS, "ahead")


def summary_line(stdout: str) -> str:
    return next((line for line in stdout.splitlines() if "groups compared" in line and line.startswith("verify")),
                stdout[-300:])  # fmt: skip


def all_final(stdout: str, settings: Settings) -> bool:
    """verify's output: every window it looked at that close_every_window closes is final in Pinot, none open
    for the recount. The derived roll-ups' hours and days (the cascade) may end past what it closes: their
    windows not yet due stay open for the recount, and those due must be final like the rest."""
    if " 0 not final in Pinot yet" not in summary_line(stdout):
        return False
    sizes = {r.name: r.window.size_s for r in settings.pipeline.rollups}
    lines = re.findall(r"^(\w+): \d+ groups compared, \d+ equal, (\d+) windows open$", stdout, re.MULTILINE)
    assert lines and {name for name, _ in lines} <= set(sizes), stdout[-2000:]
    return all(int(left) == 0 for name, left in lines if sizes[name] * 1000 <= CLOSED_AHEAD_MS)


def verify_when_final(p: Pipeline, timeout_s: float = 180, repair_s: float = 0) -> Any:
    """`livedash verify` once every window it looks at is final in Pinot (none pending), differences looked at
    again for as long as late corrections can follow final rows (corrections_due_s). With repair_s, final but
    not exact keeps it waiting that much longer, for a Pinot partition that stopped consuming and that the
    controller's validation task repairs (see test_kafka_broker_restart_mid_run)."""

    def run() -> Any:
        return run_cli(
            "verify",
            "--from",
            "now-3h",
            "--to",
            "now+10m",
            "--from-beginning",
            "--quiet",
            "--settle",
            str(corrections_due_s(p.settings())),
            env=p.env(),
            timeout=300,
        )  # fmt: skip  (poll waits for final windows itself; late corrections may follow them)

    def done(result: Any) -> bool:
        return all_final(result.stdout, p.settings()) and (result.returncode == 0 or not repair_s)

    return poll(run, timeout_s + repair_s, every_s=5, done=done)


@pytest.fixture(scope="module")
def contract(stack: Settings) -> Validator:
    return Validator(stack.pipeline.events)


def dead_letter_reasons(stack: Settings, topic: str, expected: int) -> dict[tuple[bytes, bytes], bytes]:
    """(source partition, offset) -> reason header, for every dead letter."""
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": stack.kafka.bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 * 1024 * 1024})  # fmt: skip
    out: dict[tuple[bytes, bytes], bytes] = {}
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 120
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(5_000, timeout=1.0):
                if msg.error() is None:
                    h = dict(msg.headers() or [])
                    out[(h["livedash.source.partition"], h["livedash.source.offset"])] = h.get("livedash.reason", b"")
    finally:
        consumer.close()
    return out


def test_hypothesis_malformed_messages_are_dead_lettered_and_valid_ones_counted_exactly(
    stack: Settings, contract: Validator, tmp_path: Path
) -> None:
    MALFORMED.clear()

    lenient = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

    @settings(max_examples=10_500, deadline=None, database=None, suppress_health_check=lenient)
    @given(malformed())
    def collect(case: tuple[str, bytes]) -> None:
        category, raw = case
        reason = contract.parse(raw, NOW)
        assert isinstance(reason, str) and reason, f"{category} message accepted: {raw[:200]!r}"
        MALFORMED.append(case)

    collect()
    odd: list[dict[str, Any]] = []

    @settings(max_examples=500, deadline=None, database=None)
    @given(odd_unicode_valid())
    def collect_odd(event: dict[str, Any]) -> None:
        assert not isinstance(contract.parse(orjson.dumps(event), NOW), str), event
        odd.append(event)

    collect_odd()
    assert len(MALFORMED) >= 10_000
    categories = {c for c, _ in MALFORMED}
    assert len(categories) >= 12, categories

    p = Pipeline(stack)
    p.create()
    try:
        proc = p.start_dataflow()
        producer = Producer({"bootstrap.servers": stack.kafka.bootstrap, "message.max.bytes": 2_000_000})
        valid = 0
        for i, (_, raw) in enumerate(MALFORMED):
            producer.produce(p.raw, value=raw, key=None)  # null keys too
            if i % 2 == 0:
                event = valid_event(i)
                producer.produce(p.raw, value=orjson.dumps(event), key=event["user_id"].encode())
                valid += 1
            if i % 1000 == 0:
                producer.poll(0)
        for event in odd:
            producer.produce(p.raw, value=orjson.dumps(event), key=event["user_id"].encode())
            valid += 1
        valid += close_every_window(producer, p.raw)
        assert producer.flush(60) == 0
        dead = wait_stable(lambda: p.distinct_sources(p.dead_letter), len(MALFORMED), timeout_s=240)
        assert dead == len(MALFORMED)
        assert proc.poll() is None, "the dataflow must survive every malformed message"
        reasons = dead_letter_reasons(stack, p.dead_letter, len(MALFORMED))
        assert len(reasons) == len(MALFORMED) and all(reasons.values()), "every dead letter carries its reason"
        # Valid events in the same stream are counted exactly: verify recounts and compares every roll-up
        settings_ = p.settings()
        sql = f"SELECT SUM(event_count) FROM {p.table} WHERE rollup_name = 'geo_10s'"
        total = wait_stable(lambda: int(query_all(settings_, sql)[0][0] or 0), valid, timeout_s=240)
        assert total == valid
        result = verify_when_final(p)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
        assert proc.poll() is None
        print(f"faults/malformed: {len(MALFORMED)} malformed ({len(categories)} kinds), {valid} valid, "
              f"{dead} dead-lettered; {summary_line(result.stdout)}")  # fmt: skip
    finally:
        p.stop()
        p.drop()


def test_kill9_five_times_during_a_million_events(stack: Settings) -> None:
    """Scenario 1: kill -9 the dataflow at 5 random moments while 1,000,000 events arrive; every restart resumes
    from its snapshot, and verify finds every roll-up exact."""
    import random
    import threading

    from livedash import generator

    count, kills = 1_000_000, 5
    p = Pipeline(stack)
    p.create()
    opts = generator.GeneratorOptions(seed=5, users=50_000, late_fraction=0.01, malformed_fraction=0.01)
    rng = random.Random(11)
    try:
        proc = p.start_dataflow()
        sent: dict[str, Any] = {}
        t0 = time.monotonic()
        producer = threading.Thread(target=lambda: sent.update(summary=generator.run(
            stack.kafka.bootstrap, p.raw, count, None, count / 60, opts, progress=False)))  # fmt: skip
        producer.start()
        kill_at: list[float] = []
        for run in range(kills):
            # Working first (its first rows, or its restore from the snapshot), then dead at a random moment
            log = p.log_file(run)
            if run:
                working = lambda log=log: log.exists() and "restored from snapshot" in log.read_text()  # noqa: E731
            else:  # publishing, and a first snapshot committed (else the restart has nothing to restore)
                working = lambda: p.topic_size(p.table) > 0 and p.committed_epoch() > 1  # noqa: E731
            assert wait_stable(working, True, timeout_s=120, quiet_s=0), f"dataflow run {run} did not start"
            time.sleep(rng.uniform(3, 9))
            p.kill9(proc)
            kill_at.append(round(time.monotonic() - t0, 1))
            proc = p.start_dataflow()
        producer.join()
        summary = sent["summary"]
        close_all_windows(stack, p.raw)
        result = verify_when_final(p, timeout_s=300)
        drained = round(time.monotonic() - t0, 1)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
        restores = [p.log_file(i).read_text().count("restored from snapshot") for i in range(kills + 1)]
        assert all(n > 0 for n in restores[1:]), restores  # each restart resumed from its snapshot
        dead = p.distinct_sources(p.dead_letter)
        assert dead == summary.malformed
        assert proc.poll() is None
        print(f"faults/kill9: {summary.sent} events ({summary.malformed} malformed = {dead} dead letters), "
              f"kill -9 at {kill_at} s, partitions restored per restart {restores[1:]}, verified exact "
              f"{drained} s after the start; {summary_line(result.stdout)}")  # fmt: skip
    finally:
        p.stop()
        p.drop()


def test_dataflow_stopped_for_60s_turns_health_red_and_recovers_on_its_own(
    stack: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scenario 4: events keep arriving while the dataflow is down for 60 s. Staleness rises and the
    dashboard's health strip turns red with the reason; after a restart the lag falls back to near zero by
    itself, the strip is green again, and verify is exact."""
    import os
    import subprocess
    import sys

    from streamlit.testing.v1 import AppTest

    from dashboard import health
    from dashboard.runtime import resources
    from tests.conftest import ROOT, TEST_CONFIG, free_port

    rate, threshold = 2_000, stack.dashboard.stale_after_s
    p = Pipeline(stack)
    p.create()
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    settings_ = p.settings()
    newest_sql = f"SELECT MAX(last_event_ts) FROM {p.table}"

    def state() -> tuple[health.PipelineHealth, health.Sample]:
        now = time.time()
        newest = query_all(settings_, newest_sql)[0][0]
        newest_s = float(newest) / 1000 if newest and float(newest) > 0 else None
        sample = health.scrape(url, now)
        return health.assess(None, sample, newest_s, now, threshold), sample

    def level() -> str:
        return state()[0].level

    def strip() -> str:
        """The dashboard's health strip, rendered by the app itself against this pipeline."""
        for var in [v for v in os.environ if v.startswith("LIVEDASH_")]:
            monkeypatch.delenv(var)
        for key, value in p.env().items():
            if key.startswith("LIVEDASH_"):
                monkeypatch.setenv(key, value)
        monkeypatch.setenv("LIVEDASH_CONFIG", str(TEST_CONFIG))
        monkeypatch.setenv("LIVEDASH_DATAFLOW__METRICS_PORT", str(port))
        resources.clear()
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=90)
        at.query_params["range"] = "5m"
        at.query_params["refresh"] = "0"
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        resources.clear()
        return " ".join([*(s.value for s in at.success), *(e.value for e in at.error)])

    figures: dict[str, Any] = {}
    producer: subprocess.Popen[bytes] | None = None
    try:
        proc = p.start_dataflow(metrics_port=port)
        # Events keep arriving all along: the generator as a user runs it, stopped at the end whatever happens
        cmd = [sys.executable, "-m", "livedash.cli", "generate", "--duration", "150", "--rate", str(rate),
               "--late", "0", "--topic", p.raw, "--seed", "3", "--quiet"]  # fmt: skip
        producer = subprocess.Popen(cmd, cwd=ROOT, env=p.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert wait_stable(level, "ok", timeout_s=90, quiet_s=3) == "ok"
        assert "Pipeline healthy" in strip()
        before = p.topic_size(p.raw)
        p.kill9(proc)
        stopped = time.monotonic()
        worst = 0.0
        while time.monotonic() - stopped < 60:
            h, sample = state()
            assert not sample.up and h.level == "red" and "dataflow stopped" in h.reason
            worst = max(worst, h.staleness_s or 0.0)
            time.sleep(5)
        assert worst > threshold, f"staleness rose to {worst:.0f} s only"
        red = strip()
        assert "Data is stale: dataflow stopped" in red, red
        arrived = p.topic_size(p.raw) - before
        per_s = arrived / (time.monotonic() - stopped)  # the generator's rate follows its daily rhythm
        assert arrived > 10_000, arrived
        # A spike while it is down, so the catch-up lasts longer than a scrape or two: at our speed the steady
        # trickle alone is worked off in well under a second.
        burst = run_cli("generate", "--count", str(BURST), "--rate", "0", "--late", "0", "--topic", p.raw,
                        "--seed", "4", "--quiet", env=p.env(), timeout=300)  # fmt: skip
        assert burst.returncode == 0, burst.stdout[-2000:] + burst.stderr[-2000:]
        backlog = p.topic_size(p.raw) - before  # what the restart finds
        proc = p.start_dataflow(metrics_port=port)
        restarted = time.monotonic()
        lags: list[float] = []
        h = None

        def caught_up() -> bool:
            nonlocal h
            sample = health.scrape(url, time.time())  # the metrics alone, often: the catch-up takes seconds
            if sample.up and sample.lag_events is not None:
                lags.append(sample.lag_events)
                if sample.lag_events < per_s:  # under a second of input behind; is the strip green too?
                    h, sample = state()
                    return h.level == "ok" and sample.lag_events is not None and sample.lag_events < per_s
            return False

        poll(caught_up, 120, every_s=0.2)
        recovered = time.monotonic() - restarted
        # The lag shows the backlog at once (the resumed partitions report it before their first batch) and
        # while it is worked off, then falls to under a second of input by itself.
        assert lags and max(lags) > BURST / 2, f"the backlog of {backlog:,} should show as lag: {lags[:5]}"
        assert lags[-1] < per_s and h is not None and h.level == "ok", (lags[-5:], h)
        assert "Pipeline healthy" in strip()
        out, _ = producer.communicate(timeout=200)
        assert producer.returncode == 0, out[-2000:]
        close_all_windows(stack, p.raw)
        result = verify_when_final(p, timeout_s=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
        figures.update(generated=out.decode().strip().splitlines()[-1][:120], max_staleness_s=round(worst),
                       backlog_events=backlog, max_lag_events=int(max(lags)),
                       recovered_s=round(recovered, 1),
                       verify=summary_line(result.stdout))  # fmt: skip
        print(f"faults/stopped: {figures}")
    finally:
        if producer is not None and producer.poll() is None:
            producer.kill()
            producer.wait(timeout=30)
        p.stop()
        p.drop()


def run_through_a_restart(
    stack: Settings, service: str, duration_s: float, rate: float, segment_rows: int = 10_000, repair_s: float = 0
) -> dict[str, Any]:
    """Generate events for `duration_s` at a nominal `rate`/s while `service` (kafka or pinot) is stopped and
    started again with `livedash down SERVICE` + `up`, as an operator restarts it; the dataflow keeps running
    throughout. Returns the figures; verify must pass afterwards."""
    import threading

    from dashboard import health
    from livedash import generator
    from livedash.stack import manager
    from tests.conftest import free_port

    p = Pipeline(stack, segment_rows=segment_rows)
    p.create()
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    opts = generator.GeneratorOptions(seed=7, users=20_000, late_fraction=0.01, malformed_fraction=0.01)
    quiet = lambda _: None  # noqa: E731
    lags: list[tuple[float, float]] = []  # (seconds since the restart began, lag in events)
    try:
        proc = p.start_dataflow(metrics_port=port)
        sent: dict[str, Any] = {}
        t0 = time.monotonic()
        producer = threading.Thread(target=lambda: sent.update(summary=generator.run(
            stack.kafka.bootstrap, p.raw, None, duration_s, rate, opts, progress=False)))  # fmt: skip
        producer.start()
        assert wait_stable(lambda: p.topic_size(p.table) > 0, True, timeout_s=120, quiet_s=0), "no rows published"
        time.sleep(10)  # mid-run, windows open
        began = time.monotonic()
        manager.down(stack, say=quiet, only=[service])
        down_s = time.monotonic() - began
        time.sleep(5)  # down for a while: producers queue, consumers retry
        manager.up(stack, say=quiet)
        outage_s = time.monotonic() - began
        # Pinot serves fresh rows again (within 10 s of now) by itself: it reconnects to Kafka, or re-consumes
        fresh_sql = f"SELECT MAX(last_event_ts) FROM {p.table}"
        newest = lambda: float(query_all(p.settings(), fresh_sql)[0][0] or 0) / 1000  # noqa: E731
        # How long the catch-up takes depends on the machine (a CI run needed 225 s after `up`, another 48 s):
        # wait while the newest row keeps advancing, fail if it stalls for 90 s (Pinot's start included).
        fresh, seen = wait_progressing(newest, lambda ts: time.time() - ts < 10, stall_s=90, cap_s=420)
        assert fresh, f"Pinot did not catch up after the {service} restart: {seen}"
        fresh_s = time.monotonic() - began - outage_s
        assert proc.poll() is None, f"the dataflow died while {service} restarted: {p.log_file(0).read_text()[-2000:]}"
        recovered_s = None
        while producer.is_alive() or recovered_s is None:
            sample = health.scrape(url, time.time())
            since = time.monotonic() - began
            if sample.up and sample.lag_events is not None:
                lags.append((since, sample.lag_events))
                if recovered_s is None and since > outage_s and sample.lag_events < rate:
                    recovered_s = since - outage_s  # under a second of input behind, by itself
            if since > outage_s + 300:
                break
            time.sleep(1)
        producer.join()
        summary = sent["summary"]
        close_all_windows(stack, p.raw)
        result = verify_when_final(p, timeout_s=300, repair_s=repair_s)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
        assert recovered_s is not None, f"lag did not return under {rate:.0f} events: {lags[-5:]}"
        assert proc.poll() is None, "the dataflow must ride out the restart"
        dead = p.distinct_sources(p.dead_letter)
        assert dead == summary.malformed
        return {"events": summary.sent, "malformed": summary.malformed, "dead_letters": dead,
                "stop_s": round(down_s, 1), "outage_s": round(outage_s, 1),
                "max_lag_events": int(max((lag for _, lag in lags), default=0)),
                "lag_back_under_1s_of_input_after_s": round(recovered_s, 1),
                "pinot_fresh_again_after_s": round(fresh_s, 1),
                "exact_after_s": round(time.monotonic() - t0, 1), "verify": summary_line(result.stdout)}  # fmt: skip
    finally:
        p.stop()
        p.drop()


def test_kafka_broker_restart_mid_run(stack: Settings) -> None:
    """Scenario 2: the broker stops and starts again while events arrive. Producers queue, the dataflow's
    consumers and its idempotent producer retry; nothing is lost or counted twice."""
    # Pinot 0.11 may stop consuming one partition for minutes: when Kafka is down exactly while that partition's
    # segment commits, the controller marks the segment done but cannot create the next one (it asks Kafka for the
    # partition count). Its validation task repairs that once the commit is 5 minutes old (fixed in Pinot), and
    # runs every minute in our controller config. Exactness is then reached later, not lost: up to 7 more minutes.
    figures = run_through_a_restart(stack, "kafka", duration_s=120, rate=2_500, repair_s=420)
    print(f"faults/kafka-restart: {figures}")


def test_pinot_restart_mid_run(stack: Settings) -> None:
    """Scenario 3: the Pinot service-manager JVM (controller, broker, server) restarts while events arrive.
    It re-consumes its uncommitted segments from Kafka, rebuilds its upsert state, and every row is exact."""
    # After the restart Pinot re-reads everything the dataflow published since its last commit, and each segment
    # commit stops a partition's consumption for a build and a round trip through the controller. Pinot 0.11
    # divides the row threshold among the partitions a server consumes: 200,000 is 50,000 rows per partition
    # (at 50,000, 12,500 committed every ~6 s of catch-up), still three commits per partition in a run (2026-12-01:
    # offsets 50,000, 100,000 and 150,000); the product's table commits hourly or at 100 MB.
    figures = run_through_a_restart(stack, "pinot", duration_s=240, rate=2_000, segment_rows=200_000)
    print(f"faults/pinot-restart: {figures}")
