"""Bad starts end in one clear line, before anything is started."""

import socket
from pathlib import Path

import pytest

from livedash.stack import process
from tests.conftest import ROOT, isolated_env, run_cli


def test_port_already_taken_fails_fast_with_one_line() -> None:
    state, env = isolated_env("port-taken")
    taken = int(env["LIVEDASH_KAFKA__PORT"])  # distinct from every other service's port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", taken))
        blocker.listen()
        result = run_cli("up", env=env, timeout=60)
    assert result.returncode == 1
    # One line, besides the warning a clone under /tmp gets about its state directory there
    lines = [line for line in result.stderr.strip().splitlines() if "is under /tmp" not in line]
    assert len(lines) == 1, result.stderr
    assert f"port {taken} (kafka.port, needed by kafka) is already in use" in lines[0]
    suggested = int(lines[0].rsplit("LIVEDASH_KAFKA__PORT=", 1)[1])  # says what to do, with a port config takes
    assert 1024 <= suggested <= 65535 and suggested != taken, lines[0]
    # Nothing was started for that state dir.
    for name in ("kafka", "zookeeper", "pinot"):
        assert process.find_ours(name, state) == []


def test_invalid_config_value_names_the_key() -> None:
    result = run_cli("status", env={"LIVEDASH_KAFKA__PORT": "notaport"})
    assert result.returncode == 2
    assert result.stderr.startswith("livedash: config error: kafka.port:")
    assert "LIVEDASH_KAFKA__PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_config_file_names_the_key(tmp_path: Path) -> None:
    bad = ROOT / "config" / "test.yaml"
    text = bad.read_text().replace("heap: 2g", "heap: two-gigabytes")
    text = text.replace("pipeline_file: pipeline.yaml", f"pipeline_file: {ROOT / 'config' / 'pipeline.yaml'}")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    result = run_cli("up", env={"LIVEDASH_CONFIG": str(cfg)})
    assert result.returncode == 2
    assert "config error: pinot.heap: must be a JVM heap size" in result.stderr


def test_status_of_a_stack_that_is_not_running_exits_non_zero() -> None:
    _, env = isolated_env("never-started")
    result = run_cli("status", env=env)
    assert result.returncode == 1
    assert result.stdout.count("stopped") == 3
    assert "log:" in result.stdout


def test_a_backfill_at_the_mean_rate_covers_the_hours_asked() -> None:
    """bench/dashboard.py backfills N events over H hours: the nominal rate must account for the daily rhythm
    and the bursts, or the events run hours past now (and are refused as too far in the future)."""
    from livedash.generator import GeneratorOptions, generate, mean_rate

    events, hours, start = 400_000, 24.0, 1_800_000_000_000
    nominal = events / (hours * 3600) / mean_rate(GeneratorOptions(nominal_rate=1.0))
    last = 0
    opts = GeneratorOptions(nominal_rate=nominal, malformed_fraction=0.0, chunk=1024)  # the rate changes per chunk
    for chunk in generate(events, start, opts):
        last = chunk.end_ms
    span_h = (last - start) / 3_600_000
    assert abs(span_h - hours) < 0.05 * hours, span_h


@pytest.mark.parametrize("hour_utc", [3, 15])
def test_a_backfill_of_one_hour_covers_that_hour_at_night_and_at_the_peak(hour_utc: int) -> None:
    """An hour at night runs at a third of the peak rate: sized by the daily mean, 300,000 events over the hour
    before 05:00 UTC ran an hour into the future (the dashboard bench then waited for windows the clock had not
    reached). mean_rate over the range itself sizes it right at any hour."""
    from livedash.generator import GeneratorOptions, generate, mean_rate

    events, start = 200_000, (1_800_000_000 // 86_400 * 86_400 + hour_utc * 3600) * 1000
    end = start + 3_600_000
    nominal = events / 3600 / mean_rate(GeneratorOptions(nominal_rate=1.0), start / 1000, end / 1000)
    opts = GeneratorOptions(nominal_rate=nominal, malformed_fraction=0.0, chunk=1024)
    last = max(chunk.end_ms for chunk in generate(events, start, opts))
    assert abs(last - end) < 0.05 * 3_600_000, (last - end) / 60_000


def test_down_names_the_services_it_knows_when_given_another() -> None:
    _, env = isolated_env("down-unknown")
    result = run_cli("down", "kafak", env=env, timeout=60)
    assert result.returncode == 1
    assert "unknown service 'kafak'" in result.stderr and "kafka, zookeeper, pinot" in result.stderr


def test_down_of_one_service_that_is_not_running_stops_nothing_else() -> None:
    _, env = isolated_env("down-one")
    result = run_cli("down", "pinot", env=env, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == "pinot: not running"
