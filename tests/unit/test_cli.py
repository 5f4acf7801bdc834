"""The CLI's error lines: a fatal Kafka client error reads as one line, not a traceback."""

from __future__ import annotations

import argparse

import pytest
from confluent_kafka import KafkaError, KafkaException

from livedash import cli


def test_a_fatal_kafka_error_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Seen live: a generator whose idempotent producer lost its sequence with the broker died with a traceback
    of librdkafka's KafkaException."""
    error = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, "ProduceRequest for events_raw [2] failed", fatal=True)

    def fail(args: argparse.Namespace, settings: object) -> int:
        raise KafkaException(error)

    monkeypatch.setattr(cli, "_cmd_status", fail)
    code = cli.main(["status"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("livedash: Kafka: ") and "ProduceRequest for events_raw [2] failed" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
