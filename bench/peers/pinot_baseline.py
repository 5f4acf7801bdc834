"""Pinot's own ingestion-time aggregation as the peers' baseline (no stream processor): a table per run over
the run's topic, created and dropped here; queried through the project's PinotClient."""

from __future__ import annotations

from bench.peers import EOF_TYPE, WINDOW_MS
from livedash import apply
from livedash.config import Settings
from livedash.pinot.client import PinotClient


def pinot_table(name: str, topic: str, bootstrap: str) -> tuple[dict[str, object], dict[str, object]]:
    """Schema and table of the baseline: Pinot's ingestion-time aggregation, COUNT(*) per (10 s, type,
    country) only. Pinot 0.11 drops a whole row when an aggregated metric is missing from it (clicks carry no
    latency) and fills no default first (docs/peers.md), so sum, min and max of latency_ms are left out."""
    schema = {
        "schemaName": name,
        "dimensionFieldSpecs": [{"name": "type", "dataType": "STRING"}, {"name": "country", "dataType": "STRING"}],
        "metricFieldSpecs": [{"name": "cnt", "dataType": "LONG"}],
        "dateTimeFieldSpecs": [{"name": "window_start", "dataType": "LONG", "format": "1:MILLISECONDS:EPOCH",
                                "granularity": "10:SECONDS"}],
    }  # fmt: skip
    table = {
        "tableName": name,
        "tableType": "REALTIME",
        "segmentsConfig": {"schemaName": name, "timeColumnName": "window_start", "replicasPerPartition": "1"},
        "tenants": {},
        "tableIndexConfig": {
            "loadMode": "MMAP",
            "noDictionaryColumns": ["cnt"],
            "streamConfigs": {
                "streamType": "kafka",
                "stream.kafka.topic.name": topic,
                "stream.kafka.broker.list": bootstrap,
                "stream.kafka.consumer.type": "lowlevel",
                "stream.kafka.consumer.factory.class.name":
                    "org.apache.pinot.plugin.stream.kafka20.KafkaConsumerFactory",
                "stream.kafka.decoder.class.name": "org.apache.pinot.plugin.stream.kafka.KafkaJSONMessageDecoder",
                "stream.kafka.consumer.prop.auto.offset.reset": "smallest",
                "realtime.segment.flush.threshold.rows": "0",
                "realtime.segment.flush.threshold.segment.size": "200M",
                "realtime.segment.flush.threshold.time": "6h",
            },
        },
        "ingestionConfig": {
            "filterConfig": {"filterFunction": f"startsWith(type, '{EOF_TYPE}')"},
            "transformConfigs": [{"columnName": "window_start", "transformFunction": f"round(ts, {WINDOW_MS})"}],
            "aggregationConfigs": [{"columnName": "cnt", "aggregationFunction": "COUNT(*)"}],
        },
        "metadata": {},
    }  # fmt: skip
    return schema, table


def create(settings: Settings, name: str, topic: str) -> PinotClient:
    """The baseline table `name` over `topic`, consuming from its start; a client for its broker."""
    schema, table = pinot_table(name, topic, settings.kafka.bootstrap)
    apply.apply_schema(settings, schema)
    apply.apply_table(settings, table)
    return PinotClient.of(settings.pinot, timeout_s=60)


def drop(settings: Settings, name: str) -> None:
    PinotClient.of(settings.pinot).drop(name, timeout_s=60)
