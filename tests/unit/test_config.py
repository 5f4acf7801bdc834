from pathlib import Path

import pytest

from livedash import config
from livedash.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_default_file_loads_with_every_section() -> None:
    s = config.load(ROOT / "config" / "livedash.yaml", environ={})
    assert s.kafka.bootstrap == "127.0.0.1:9092"
    assert s.kafka.topic("events_raw").partitions == 4
    assert s.pinot.controller_url == "http://127.0.0.1:9000"
    assert s.state_dir == ROOT / ".livedash"
    assert "events_raw" in s.pinot.tables


def test_test_config_uses_other_ports_and_state_dir() -> None:
    dev = config.load(ROOT / "config" / "livedash.yaml", environ={})
    test = config.load(ROOT / "config" / "test.yaml", environ={})
    assert not set(dev.ports().values()) & set(test.ports().values())
    assert dev.state_dir != test.state_dir


def test_environment_overrides_typed_values() -> None:
    s = config.load(environ={"LIVEDASH_KAFKA__PORT": "19092", "LIVEDASH_PINOT__HEAP": "3g"})
    assert s.kafka.port == 19092
    assert s.kafka.bootstrap == "127.0.0.1:19092"
    assert s.pinot.heap == "3g"


def test_livedash_config_variable_selects_the_file() -> None:
    s = config.load(environ={"LIVEDASH_CONFIG": str(ROOT / "config" / "test.yaml")})
    assert s.kafka.port == 19092


@pytest.mark.parametrize(
    ("env", "key", "words"),
    [
        ({"LIVEDASH_KAFKA__PORT": "notaport"}, "kafka.port", "valid integer"),
        ({"LIVEDASH_KAFKA__PORT": "80"}, "kafka.port", "between 1024 and 65535"),
        ({"LIVEDASH_PINOT__BROKER_PORT": "70000"}, "pinot.broker_port", "between 1024 and 65535"),
        ({"LIVEDASH_PINOT__HEAP": "lots"}, "pinot.heap", "heap size"),
        ({"LIVEDASH_KAFKA__PROT": "9092"}, "kafka.prot", "unknown key"),
        ({"LIVEDASH_PINOT__BROKER_PORT": "9092"}, "(top level)", "both 9092"),
        ({"LIVEDASH_KAFKA__START_TIMEOUT_S": "-1"}, "kafka.start_timeout_s", "greater than 0"),
    ],
)
def test_bad_values_name_the_key_and_the_variable(env: dict[str, str], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config.load(ROOT / "config" / "livedash.yaml", environ=env)
    message = str(exc.value)
    assert f"config error: {key}:" in message
    assert words in message
    if key != "(top level)":
        assert next(iter(env)) in message  # says which variable to fix


def test_bad_values_in_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"pipeline_file: {ROOT / 'config' / 'pipeline.yaml'}\n"
        "kafka:\n  topics:\n    - name: 'no spaces allowed'\n      partitions: 0\n"
    )
    with pytest.raises(ConfigError) as exc:
        config.load(bad, environ={})
    message = str(exc.value)
    assert "kafka.topics.0.name: must be a Kafka topic name" in message
    assert "kafka.topics.0.partitions" in message
    assert "(in bad.yaml)" in message


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "absent.yaml", environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(broken, environ={})


def test_unknown_topic_lookup_is_a_config_error() -> None:
    s = config.load(environ={})
    with pytest.raises(ConfigError, match="no topic named 'nope'"):
        s.kafka.topic("nope")


def test_settings_are_frozen() -> None:
    s = config.load(environ={})
    with pytest.raises(Exception, match="frozen"):
        s.kafka.port = 1  # type: ignore[misc]


def test_tier_topics_keep_what_their_tables_keep() -> None:
    settings = config.load(ROOT / "config" / "livedash.yaml", environ={})
    assert settings.kafka.topic("aggregates").retention_hours == settings.pipeline.retention.recent_h
    assert settings.kafka.topic("aggregates_history").retention_hours == settings.pipeline.retention.history_h
    assert settings.kafka.topic("aggregates_live").retention_hours == settings.pipeline.retention.live_min / 60
    with pytest.raises(ConfigError, match=r"'aggregates_live' keeps 1\.25 h but its tier keeps 0\.75 h"):
        config.load(ROOT / "config" / "livedash.yaml", environ={"LIVEDASH_PIPELINE__RETENTION__LIVE_MIN": "45"})
    with pytest.raises(ConfigError, match="keeps 3 h but its tier keeps 5 h"):
        config.load(ROOT / "config" / "livedash.yaml", environ={"LIVEDASH_PIPELINE__RETENTION__RECENT_H": "5"})


def test_processes_up_starts_load_the_same_settings_with_every_override() -> None:
    from livedash.stack.services import Dashboard, Dataflow

    overrides = {"LIVEDASH_KAFKA__PORT": "29092", "LIVEDASH_DATAFLOW__METRICS_PORT": "23030",
                 "LIVEDASH_STATE_DIR": str(ROOT / ".livedash-elsewhere")}  # fmt: skip
    parent = config.load(ROOT / "config" / "livedash.yaml", environ=overrides)
    for svc in (Dataflow(parent), Dashboard(parent)):
        env = svc.environment()
        assert {k: env[k] for k in overrides} == overrides
        child = config.load(environ=env)
        assert child == parent, svc.name
        assert child.kafka.bootstrap.endswith(":29092") and child.dataflow.metrics_port == 23030


def test_a_state_dir_under_tmp_works_with_a_warning_that_says_what_to_set() -> None:
    s = config.load(ROOT / "config" / "livedash.yaml", environ={"LIVEDASH_STATE_DIR": "/tmp/clone/.livedash"})
    assert s.state_dir == Path("/tmp/clone/.livedash").resolve()
    warning = s.state_dir_warning()
    assert warning is not None and str(s.state_dir) in warning and "LIVEDASH_STATE_DIR=" in warning
    assert config.load(ROOT / "config" / "livedash.yaml", environ={}).state_dir_warning() is None or str(
        ROOT
    ).startswith("/tmp")
