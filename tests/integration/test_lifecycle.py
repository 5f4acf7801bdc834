"""`up` twice is harmless, `down` leaves nothing running, data survives a restart, and bad starts explain."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from livedash import apply, config, sample
from livedash.config import Settings
from livedash.stack import jars, manager, process
from livedash.stack.services import Kafka, all_services
from livedash.stack.toolchain import require_java
from tests.conftest import ROOT, TEST_CONFIG, isolated_env, run_cli
from tests.pinot_query import scalar, wait_for


def our_pids(settings: Settings) -> dict[str, list[int]]:
    return {svc.name: process.find_ours(svc.name, settings.state_dir) for svc in all_services(settings)}


def any_process_of(state_dir: Path) -> list[int]:
    """Every live process whose command line mentions this state dir (ours or strays)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"-Dlivedash.state={state_dir}".encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def listening(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def test_up_twice_is_harmless(stack: Settings) -> None:
    before = our_pids(stack)
    assert all(len(pids) == 1 for pids in before.values()), before
    result = run_cli("up")
    assert result.returncode == 0, result.stderr
    for name in ("kafka", "zookeeper", "pinot"):
        assert f"{name}: already running (pid {before[name][0]}), healthy; reused" in result.stdout
    assert our_pids(stack) == before  # nothing new started, nothing restarted
    status = run_cli("status")
    assert status.returncode == 0, status.stdout
    for name in ("kafka", "zookeeper", "pinot"):
        assert any(line.startswith(name) and " healthy " in line for line in status.stdout.splitlines())


def test_down_stops_everything_and_data_survives_up(stack: Settings) -> None:
    tag = f"restart-{uuid.uuid4().hex[:8]}"
    assert sample.produce(stack, count=2_000, campaign=tag, seed=3) == 2_000
    sql = f"SELECT COUNT(*) FROM events_raw WHERE campaign = '{tag}'"
    assert wait_for(lambda: scalar(stack, sql), 2_000) == 2_000

    down = run_cli("down")
    assert down.returncode == 0, down.stderr
    assert "killed" not in down.stdout, down.stdout  # every server stopped on SIGTERM, within the timeout
    for name in ("dataflow", "pinot", "zookeeper", "kafka"):
        assert f"{name}: stopped (pid" in down.stdout, down.stdout
    assert any_process_of(stack.state_dir) == []
    assert not any(listening(stack.kafka.host, port) for port in stack.ports().values())
    assert not list((stack.state_dir / "run").glob("*.pid"))
    assert run_cli("status").returncode == 1

    up = run_cli("up", "--dataflow")  # the stack as the session found it: servers and the dataflow
    assert up.returncode == 0, up.stderr
    assert "segments served and queryable" in up.stdout
    assert scalar(stack, sql) == 2_000  # queryable at once, exactly as before the restart


def test_pinot_query_console_is_served(stack: Settings) -> None:
    import requests

    page = requests.get(f"{stack.pinot.controller_url}/", timeout=10)
    assert page.status_code == 200
    assert "<html" in page.text.lower()


def test_kafka_storage_formats_with_a_cluster_id_starting_with_a_dash(stack: Settings) -> None:
    """An id starting with "-" (an older state dir kept one 1 time in 64) still formats: it is one argument."""
    state, env = isolated_env("dash-id")
    try:
        settings = config.load(TEST_CONFIG, environ=env)
        kafka = Kafka(settings)
        kafka.dir.mkdir(parents=True)
        (kafka.dir / "cluster.id").write_text("-" + "A" * 21 + "\n")
        cmd = kafka.command(require_java(), jars.resolve(jars.artifacts()["kafka"], stack.state_dir, kafka.out_file))
        assert cmd[-2:] == ["kafka.Kafka", str(state / "conf" / "kafka-server.properties")]
        meta_file = kafka.dir / "data" / "meta.properties"
        log = kafka.out_file.read_text() if kafka.out_file.exists() else "(no output)"
        assert meta_file.exists(), f"no {meta_file}; the format's output:\n{log[-3000:]}"
        assert "cluster.id=-" + "A" * 21 in meta_file.read_text().splitlines(), meta_file.read_text() + log[-3000:]
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_unhealthy_start_reports_timeout_with_log_tail(stack: Settings) -> None:
    """A server not healthy in time is stopped again and the error shows its log; `down` stops the rest."""
    state, env = isolated_env("timeout")
    env["LIVEDASH_PINOT__START_TIMEOUT_S"] = "2"  # Pinot needs ~10 s: it cannot make this
    try:
        result = run_cli("up", env=env, timeout=300)
        assert result.returncode == 1
        assert "livedash: pinot was not healthy within 2s (controller" in result.stderr
        assert "last lines of" in result.stderr and "pinot.log" in result.stderr
        assert process.find_ours("pinot", state) == []  # the half-started Pinot was stopped again
        assert len(process.find_ours("kafka", state)) == 1  # what became healthy stays up, like compose
    finally:
        assert run_cli("down", env=env).returncode == 0
    assert any_process_of(state) == []


def test_server_dying_at_start_is_reported_with_its_output(stack: Settings) -> None:
    state, env = isolated_env("dies")
    meta = state / "kafka" / "data" / "meta.properties"
    meta.parent.mkdir(parents=True)
    meta.write_text("version=1\nnode.id=99\ncluster.id=not-this-one\n")  # storage of another broker
    try:
        result = run_cli("up", env=env, timeout=300)
        assert result.returncode == 1
        assert "livedash: kafka exited during start-up; last lines of" in result.stderr
        assert "kafka.out" in result.stderr
    finally:
        run_cli("down", env=env)
    assert any_process_of(state) == []


def demo_figures(stdout: str) -> tuple[int, int, int]:
    """(sent, valid, malformed) from the demo's summary line."""
    match = re.search(r"demo: ([\d,]+) events sent in .*: ([\d,]+) valid, ([\d,]+) malformed on purpose", stdout)
    assert match, stdout
    sent, valid, malformed = (int(g.replace(",", "")) for g in match.groups())
    assert sent == valid + malformed
    return sent, valid, malformed


def test_quick_start_demo_command_runs_the_pipeline(stack: Settings) -> None:
    # The live table: open windows' running rows and final rows copied, for its last 75 minutes (so from a recent
    # start). Whole windows from before the oldest event the demo may send (late ones up to 10 minutes behind).
    since = int(time.time() * 1000) - 900_000
    since -= since % 60_000
    rollup_sql = (
        f"SELECT SUM(event_count) FROM aggregates_live WHERE rollup_name = 'geo_10s' AND window_start >= {since}"
    )
    raw_before = scalar(stack, "SELECT COUNT(*) FROM events_raw")
    rolled_before = scalar(stack, rollup_sql) or 0
    result = run_cli("demo", "--count", "3000", "--rate", "1000", timeout=300)
    assert result.returncode == 0, result.stderr
    sent, valid, malformed = demo_figures(result.stdout)
    assert sent == 3000 and malformed > 0
    assert f"demo: all {valid:,} valid events are counted" in result.stdout, result.stdout
    assert "dataflow: started" in result.stdout or "dataflow: already running" in result.stdout
    assert "/#/query" in result.stdout
    # What this demo sent, exactly, and nothing else: in the raw table (only the valid events, the dataflow
    # dead-letters the rest) and in the roll-ups its dataflow computed.
    assert wait_for(lambda: scalar(stack, "SELECT COUNT(*) FROM events_raw"), raw_before + valid) == raw_before + valid
    assert wait_for(lambda: scalar(stack, rollup_sql), rolled_before + valid) == rolled_before + valid
    status = run_cli("status")
    assert "dataflow" in status.stdout and "consumer lag" in status.stdout


def test_quick_start_from_a_clone_under_tmp_with_port_overrides(stack: Settings) -> None:
    """The README's first command as a new user runs it: from a clone under /tmp in a folder whose name has a space
    (its state dir there, with a warning), every port moved by LIVEDASH_* variables; then `down` stops every
    server gracefully."""
    import tempfile

    import requests

    from tests.conftest import port_env

    clone = Path(tempfile.mkdtemp(prefix="livedash quick start-", dir="/tmp")) / "livedash"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    (clone / ".venv").symlink_to(ROOT / ".venv")  # the environment bin/bootstrap would build: same pyproject
    ports = port_env()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVEDASH_")} | ports
    state = clone / ".livedash"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(clone / "bin" / "livedash"), *args], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip

    try:
        result = cli("demo", "--count", "2000", "--rate", "1000")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"the state directory {state} is under /tmp" in result.stderr and "LIVEDASH_STATE_DIR=" in result.stderr
        _, valid, _ = demo_figures(result.stdout)
        assert f"demo: all {valid:,} valid events are counted" in result.stdout, result.stdout
        dashboard = requests.get(f"http://127.0.0.1:{ports['LIVEDASH_DASHBOARD__PORT']}/_stcore/health", timeout=10)
        assert dashboard.status_code == 200
        metrics = requests.get(f"http://127.0.0.1:{ports['LIVEDASH_DATAFLOW__METRICS_PORT']}/metrics", timeout=10)
        assert metrics.status_code == 200 and "livedash_events_in_total" in metrics.text
        # (this process imports the main checkout, whose default state dir is not the clone's: name it)
        moved = config.load(clone / "config" / "livedash.yaml", environ={**ports, "LIVEDASH_STATE_DIR": str(state)})
        assert scalar(moved, "SELECT COUNT(*) FROM events_raw") == valid
        geo = "SELECT SUM(event_count) FROM aggregates_live WHERE rollup_name = 'geo_10s'"  # a new stack
        assert wait_for(lambda: scalar(moved, geo), valid) == valid
        down = cli("down")
        assert down.returncode == 0, down.stderr
        for name in ("dashboard", "dataflow", "pinot", "zookeeper", "kafka"):
            assert f"{name}: stopped (pid" in down.stdout, down.stdout  # on SIGTERM, none killed
        assert any_process_of(state) == []
        assert all(process.find_ours(name, state) == [] for name in manager.SERVICE_NAMES)
    finally:
        cli("down")
        shutil.rmtree(clone.parent, ignore_errors=True)


def test_sigterm_stops_generate_and_every_event_it_counted_is_delivered(stack: Settings) -> None:
    """`kill PID` stops the generator like Ctrl-C: what it reports sent is in Kafka, nothing dropped."""
    from tests.pipeline_harness import Pipeline, wait_stable

    p = Pipeline(stack)
    apply.ensure_topic(p.settings(), p.raw, say=lambda _: None)
    cmd = [sys.executable, "-m", "livedash.cli", "generate", "--rate", "5000", "--topic", p.raw, "--quiet"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=p.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_stable(lambda: p.topic_size(p.raw) >= 1_000, True, timeout_s=60, quiet_s=0)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, (proc.returncode, out, err)
    match = re.search(r"generate: (\d+) events to " + p.raw, out)
    assert match, out + err
    sent = int(match.group(1))
    assert sent >= 1_000
    assert p.topic_size(p.raw) == sent
