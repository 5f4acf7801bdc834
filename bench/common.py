"""Shared bench plumbing: throwaway topics on the dev stack, dataflow processes, metrics scraping."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from livedash import apply, config, prometheus
from livedash.config import PROJECT_ROOT, Settings
from livedash.wait import poll

BENCH_DIR = PROJECT_ROOT / ".livedash" / "bench"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}"


def median(values: list[float]) -> float:
    return statistics.median(values)


class Topics:
    """raw/valid/aggregates/dead-letter/late topics with a unique suffix, and the env that points the dataflow at
    them."""

    def __init__(self, partitions: int = 4) -> None:
        self.suffix = uuid.uuid4().hex[:6]
        self.partitions = partitions
        self.raw = f"bench_raw_{self.suffix}"
        self.agg = f"bench_agg_{self.suffix}"
        self.dlq = f"bench_dlq_{self.suffix}"
        self.late = f"bench_late_{self.suffix}"
        self.valid = f"bench_valid_{self.suffix}"

    def env(self) -> dict[str, str]:
        topics = [{"name": t, "partitions": self.partitions} for t in (self.raw, self.agg, self.valid)]
        topics += [{"name": t, "partitions": 1} for t in (self.dlq, self.late)]
        # LIVEDASH_CONFIG passes (a benchmark may run on the test stack); other overrides do not
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDASH_") or k == "LIVEDASH_CONFIG"}
        env.update({
            "LIVEDASH_KAFKA__TOPICS": json.dumps(topics),
            "LIVEDASH_PIPELINE__TOPICS__RAW": self.raw, "LIVEDASH_PIPELINE__TOPICS__AGGREGATES": self.agg,
            "LIVEDASH_PIPELINE__TOPICS__HISTORY": self.agg,  # both tiers into one topic: the benchmarks count rows
            "LIVEDASH_PIPELINE__TOPICS__DEAD_LETTER": self.dlq, "LIVEDASH_PIPELINE__TOPICS__LATE": self.late,
            "LIVEDASH_PIPELINE__TOPICS__VALID": self.valid,
            "PYTHONPATH": str(PROJECT_ROOT),
        })  # fmt: skip
        return env

    def settings(self) -> Settings:
        return config.load(environ=self.env())

    def create(self) -> Settings:
        settings = self.settings()
        for topic in settings.kafka.topics:
            apply.ensure_topic(settings, topic.name, say=lambda _: None)
        return settings


def start_dataflows(env: dict[str, str], processes: int, log_prefix: str,
                    snapshot_s: int | None = None) -> list[tuple[subprocess.Popen[bytes], int]]:  # fmt: skip
    """`processes` cooperating dataflow processes, from offset 0: with recovery on, as the product runs (a fresh
    recovery store, snapshots every `snapshot_s`, the dev config's dataflow.snapshot_s by default), or without
    (snapshot_s=0: Bytewax's epochs are then 10 s)."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    base = 23000 + (uuid.uuid4().int % 500) * 10
    addresses = ";".join(f"127.0.0.1:{base + i}" for i in range(processes))
    if snapshot_s is None:
        snapshot_s = config.load().dataflow.snapshot_s
    recovery: list[str] = []
    if snapshot_s:
        store = BENCH_DIR / f"recovery-{log_prefix}-{uuid.uuid4().hex[:6]}"
        store.mkdir(parents=True)
        subprocess.run([sys.executable, "-m", "bytewax.recovery", str(store), str(processes)], check=True,
                       capture_output=True)  # fmt: skip
        recovery = ["-r", str(store), "-s", str(snapshot_s), "-b", "0"]
    procs = []
    for i in range(processes):
        port = base + 100 + i
        cmd = [sys.executable, "-m", "bytewax.run", "dataflows.aggregate:flow", *recovery]
        if processes > 1:
            cmd += ["-i", str(i), "-a", addresses]
        penv = {**env, "BYTEWAX_DATAFLOW_API_ENABLED": "1", "BYTEWAX_DATAFLOW_API_PORT": str(port)}
        log = (BENCH_DIR / f"{log_prefix}-{i}.log").open("wb")
        procs.append((subprocess.Popen(cmd, env=penv, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT), port))
    return procs


def metric_sum(port: int, name: str) -> float:
    """The sum of the samples `name` (over their labels) at the dataflow's metrics port; 0 when it does not answer."""
    try:
        return prometheus.total(prometheus.scrape(f"http://127.0.0.1:{port}/metrics", timeout_s=2), name)
    except prometheus.ScrapeError:
        return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    """A /proc/PID/status figure in kB (VmRSS: resident now, VmHWM: peak resident)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


def halt(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0-1) of the values: the value at that rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def stop(procs: list[tuple[subprocess.Popen[bytes], int]]) -> None:
    for proc, _ in procs:
        proc.kill()
        proc.wait(timeout=30)


def wait_until(check: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> float:
    """Seconds until check() held; TimeoutError when it did not within timeout_s."""
    start = time.monotonic()
    if not poll(check, timeout_s, every_s):
        raise TimeoutError(f"not reached within {timeout_s}s")
    return time.monotonic() - start


def measure_intake(
    procs: list[tuple[subprocess.Popen[bytes], int]],
    events: int,
    timeout_s: float,
    every_s: float,
    others: dict[str, int] | None = None,
) -> tuple[float, float, dict[str, float]]:
    """Events folded in per second (the events-in metric, first event to `events`) and CPU seconds per
    million events, summed over the dataflow processes; and the same CPU figure for other processes on the
    machine over the same interval (others: name -> pid, e.g. the Kafka broker that serves the reads)."""
    ports = [port for _, port in procs]
    others = others or {}
    total = lambda: sum(metric_sum(p, "livedash_events_in_total") for p in ports)  # noqa: E731
    wait_until(lambda: total() > 0, 120, every_s=0.05)
    t0, n0 = time.monotonic(), total()
    cpu0 = sum(cpu_seconds(proc.pid) for proc, _ in procs)
    other0 = {name: cpu_seconds(pid) for name, pid in others.items()}
    wait_until(lambda: total() >= events, timeout_s, every_s=every_s)  # scrapes cost the measured process CPU
    elapsed = time.monotonic() - t0
    cpu = sum(cpu_seconds(proc.pid) for proc, _ in procs) - cpu0
    millions = (events - n0) / 1e6
    other = {name: (cpu_seconds(pid) - other0[name]) / millions for name, pid in others.items()}
    return (events - n0) / elapsed, cpu / millions, other
