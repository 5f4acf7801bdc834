import json
from pathlib import Path

import pytest

from dashboard.stitch import RAW_BUCKET, RAW_BUCKET_MS
from livedash import apply, config
from livedash.errors import LivedashError
from livedash.pipeline import rows

ROOT = Path(__file__).resolve().parents[2]


def test_subset_ignores_defaults_pinot_adds() -> None:
    want = {"a": 1, "b": {"c": "x"}, "l": [{"n": 1}]}
    have = {"a": "1", "b": {"c": "x", "default": True}, "l": [{"n": 1, "extra": 2}], "more": 0}
    assert apply.is_subset(want, have)
    assert not apply.is_subset({"a": 2}, have)
    assert not apply.is_subset({"l": [{"n": 1}, {"n": 2}]}, have)
    assert not apply.is_subset({"missing": 1}, have)


def test_every_declared_table_has_a_valid_schema_and_config() -> None:
    settings = config.load(ROOT / "config" / "livedash.yaml", environ={})
    assert settings.pinot.tables
    for name in settings.pinot.tables:
        schema, table = apply.load_table(name, settings)
        columns = {f["name"] for kind in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
                   for f in schema.get(kind, [])}  # fmt: skip
        assert table["segmentsConfig"]["timeColumnName"] in columns
        streams = table["tableIndexConfig"]["streamConfigs"]
        assert streams["stream.kafka.broker.list"] == settings.kafka.bootstrap
        settings.kafka.topic(apply.topic_of(table))  # the topic is declared, with its partitions


def test_raw_events_table_keeps_24_hours() -> None:
    table = json.loads((ROOT / "pinot" / "tables" / "events_raw" / "table.json").read_text())
    assert table["segmentsConfig"]["retentionTimeUnit"] == "HOURS"
    assert table["segmentsConfig"]["retentionTimeValue"] == "24"


def test_unknown_table_folder_is_reported(tmp_path: Path) -> None:
    settings = config.load(environ={})
    with pytest.raises(LivedashError, match="does not exist"):
        apply.load_table("nope", settings, tables_dir=tmp_path)


def test_aggregates_schema_matches_the_rows_the_dataflow_writes() -> None:
    import orjson

    from livedash.pipeline.contract import Validator
    from livedash.pipeline.windows import PartitionWindows

    settings = config.load(ROOT / "config" / "livedash.yaml", environ={})
    schema, table = apply.load_table("aggregates", settings)
    columns = {f["name"] for kind in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
               for f in schema[kind]}  # fmt: skip
    windows = PartitionWindows(settings.pipeline, 0)
    dims = {d: "x" for d in settings.pipeline.events.dimensions}
    raw = {**dims, "event_id": "e", "ts": 1_800_000_000_000, "type": "click", "user_id": "u", "latency_ms": 1.0}
    event = Validator(settings.pipeline.events).parse(orjson.dumps(raw), 1_800_000_000_000)
    assert not isinstance(event, str), event
    windows.add(event, 0)
    row = orjson.loads(windows.publish()[0].value)
    assert set(row) == columns
    # the one description of the row format says the same, in the order a row holds its columns
    assert list(row) == rows.columns(settings.pipeline.events.dimensions, settings.pipeline.events.metrics)
    kept, topics = settings.pipeline.retention, settings.pipeline.topics
    for name, topic, unit, hours in (("aggregates", topics.aggregates, "HOURS", kept.recent_h),
                                     ("aggregates_history", topics.history, "HOURS", kept.history_h),
                                     ("aggregates_live", topics.live, "MINUTES", kept.live_min)):  # fmt: skip
        tier_schema, table = apply.load_table(name, settings)
        assert {k: v for k, v in tier_schema.items() if k != "schemaName"} == {
            k: v for k, v in schema.items() if k != "schemaName"
        }, "both tiers hold the same rows"
        assert tier_schema["primaryKeyColumns"] == ["pk"]
        # MD5 keys: Pinot keeps every key in memory for as long as the row (about 100 bytes less per key)
        assert table["upsertConfig"] == {"mode": "FULL", "comparisonColumn": "version", "hashFunction": "MD5"}
        assert table["routing"]["instanceSelectorType"] == "strictReplicaGroup"
        assert apply.topic_of(table) == topic
        assert (table["segmentsConfig"]["retentionTimeUnit"], table["segmentsConfig"]["retentionTimeValue"]) == (
            unit,
            str(hours),
        )


def test_the_raw_bucket_the_dashboard_lists_is_the_column_pinot_computes() -> None:
    """dashboard.stitch lists raw events' buckets by RAW_BUCKET: Pinot computes it from ts at ingestion, rounded
    down to RAW_BUCKET_MS, with an inverted index (else the list would scan as the range does)."""
    settings = config.load(ROOT / "config" / "livedash.yaml", environ={})
    schema, table = apply.load_table("events_raw", settings)
    assert {"name": RAW_BUCKET, "dataType": "LONG"} in schema["dimensionFieldSpecs"]
    transforms = table["ingestionConfig"]["transformConfigs"]
    assert {"columnName": RAW_BUCKET, "transformFunction": f"round(ts, {RAW_BUCKET_MS})"} in transforms
    assert RAW_BUCKET in table["tableIndexConfig"]["invertedIndexColumns"]
