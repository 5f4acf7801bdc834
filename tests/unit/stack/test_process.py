"""Process bookkeeping: only processes carrying our marker are reused or stopped."""

import os
import socket
import sys
import time
from pathlib import Path

from livedash.stack import process

SLEEPER = "import pathlib, signal, sys, time; {handler}pathlib.Path(sys.argv[1]).touch(); time.sleep(120)"


def start_sleeper(tmp_path: Path, name: str, ignore_term: bool = False) -> tuple[int, Path]:
    handler = "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else ""
    ready = tmp_path / f"{name}.ready"
    cmd = [sys.executable, "-c", SLEEPER.format(handler=handler), str(ready), *process.marker(name, tmp_path)]
    pid_file = tmp_path / "run" / f"{name}.pid"
    proc = process.start(cmd, tmp_path / "logs" / f"{name}.out", pid_file, tmp_path / name)
    for _ in range(100):  # until its signal handler is in place
        if ready.exists():
            break
        time.sleep(0.05)
    return proc.pid, pid_file


def test_started_process_is_found_by_pid_file_and_marker(tmp_path: Path) -> None:
    pid, pid_file = start_sleeper(tmp_path, "svc")
    try:
        assert process.running_pid(pid_file, "svc", tmp_path) == pid
        assert process.find_ours("svc", tmp_path) == [pid]
        assert not process.is_ours(pid, "other", tmp_path)
        assert not process.is_ours(pid, "svc", tmp_path / "elsewhere")
    finally:
        assert process.stop(pid, 10, lambda: process.is_ours(pid, "svc", tmp_path))
    assert not process.is_ours(pid, "svc", tmp_path)


def test_process_ignoring_sigterm_is_killed_after_timeout(tmp_path: Path) -> None:
    pid, _ = start_sleeper(tmp_path, "stubborn", ignore_term=True)
    t0 = time.monotonic()
    graceful = process.stop(pid, 1.0, lambda: process.is_ours(pid, "stubborn", tmp_path))
    assert not graceful
    assert time.monotonic() - t0 >= 1.0
    assert not process.is_ours(pid, "stubborn", tmp_path)


def test_recycled_pid_in_pid_file_is_not_ours(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "kafka.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{os.getpid()}\n")  # this test process: alive, but not a livedash service
    assert process.running_pid(pid_file, "kafka", tmp_path) is None


def test_port_in_use_is_detected() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert process.port_in_use("127.0.0.1", port)
        owner = process.port_owner(port)
        assert owner == "" or f"pid {os.getpid()}" in owner
    assert not process.port_in_use("127.0.0.1", port)


def test_tail_returns_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert process.tail(log, 3).splitlines() == ["line 97", "line 98", "line 99"]
    assert process.tail(tmp_path / "absent.log") == "(no log yet)"


def test_failed_kafka_format_says_why(tmp_path: Path) -> None:
    """CI once saw only "formatting Kafka storage failed; see kafka.out": the error must carry the reason itself."""
    import shutil

    import pytest

    from livedash import config
    from livedash.errors import LivedashError
    from livedash.stack.services import Kafka

    java = shutil.which("java")
    if java is None:
        pytest.fail("java is required by the stack and by this test")
    state = config.PROJECT_ROOT / ".livedash-test" / "format-check"  # state dirs may not be under /tmp
    shutil.rmtree(state, ignore_errors=True)
    try:
        kafka = Kafka(config.load(environ={"LIVEDASH_STATE_DIR": str(state)}))
        with pytest.raises(LivedashError) as err:
            kafka.command(Path(java), str(tmp_path / "no-such.jar"))  # StorageTool is not on this classpath
    finally:
        shutil.rmtree(state, ignore_errors=True)
    assert "exit 1" in str(err.value)
    assert "kafka.tools.StorageTool" in str(err.value)  # the JVM's own line, from kafka.out
