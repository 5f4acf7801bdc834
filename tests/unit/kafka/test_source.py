"""Which consumer errors the source rides out and which stop the dataflow (no servers)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from livedash.kafka.source import _end_of_partition


@pytest.mark.parametrize(
    "code", [KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
             KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE],
)  # fmt: skip
def test_end_of_partition_and_a_restarting_broker_are_skipped(code: int) -> None:
    assert _end_of_partition(KafkaError(code)) is True


@pytest.mark.parametrize(
    "code", [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._SSL]
)
def test_real_errors_raise(code: int) -> None:
    with pytest.raises(KafkaException):
        _end_of_partition(KafkaError(code))


def test_a_fatal_error_raises_even_if_its_code_is_usually_transient() -> None:
    with pytest.raises(KafkaException):
        _end_of_partition(KafkaError(KafkaError._TRANSPORT, fatal=True))


def test_no_error_is_not_skipped() -> None:
    assert _end_of_partition(None) is False
