"""`livedash apply` against the real Pinot: a raw-events table whose topic or columns changed is rebuilt from
its topic; an upsert table with an incompatible schema is refused with what to do."""

from __future__ import annotations

import copy
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from livedash import apply
from livedash.config import Settings
from livedash.errors import LivedashError
from livedash.kafka import admin as kafka
from livedash.pinot.client import PinotClient
from tests.pinot_query import query, scalar, wait_for


def test_a_raw_table_moved_to_another_topic_or_column_limit_is_rebuilt_from_it(stack: Settings) -> None:
    suffix = uuid.uuid4().hex[:6]
    name, old_topic, new_topic = f"moved_{suffix}", f"moved_a_{suffix}", f"moved_b_{suffix}"
    schema, table = apply.load_table("events_raw", stack)
    schema["schemaName"] = table["tableName"] = table["segmentsConfig"]["schemaName"] = name
    old_schema, old_table = copy.deepcopy(schema), copy.deepcopy(table)
    old_table["tableIndexConfig"]["streamConfigs"]["stream.kafka.topic.name"] = old_topic
    for field in old_schema["dimensionFieldSpecs"]:
        field.pop("maxLength", None)  # as before this release: Pinot's default of 512
    table["tableIndexConfig"]["streamConfigs"]["stream.kafka.topic.name"] = new_topic
    kafka.create_topics(kafka.kafka_admin(stack.kafka.bootstrap), {old_topic: 1, new_topic: 1})
    producer = Producer({"bootstrap.servers": stack.kafka.bootstrap})
    for topic, n in ((old_topic, 3), (new_topic, 5)):
        for i in range(n):
            event = {"event_id": f"{topic}-{i}", "ts": 1_800_000_000_000 + i, "type": "click", "user_id": "u"}
            producer.produce(topic, value=orjson.dumps(event))
    assert producer.flush(30) == 0
    said: list[str] = []
    try:
        apply.apply_one(stack, old_schema, old_table, say=said.append)
        assert wait_for(lambda: scalar(stack, f"SELECT COUNT(*) FROM {name}"), 3) == 3
        apply.apply_one(stack, schema, table, say=said.append)  # both the topic and the column limits changed
        assert any("dropped to be created anew" in line for line in said), said
        assert wait_for(lambda: scalar(stack, f"SELECT COUNT(*) FROM {name}"), 5) == 5  # the new topic's rows only
        said.clear()
        apply.apply_one(stack, schema, table, say=said.append)  # and a second run changes nothing
        assert said == [f"schema {name}: unchanged", f"table {name}_REALTIME: unchanged"], said
    finally:
        PinotClient.of(stack.pinot).drop(name)


def test_an_upsert_table_with_an_incompatible_schema_is_refused_with_what_to_do(stack: Settings) -> None:
    schema, _ = apply.load_table("aggregates", stack)
    changed = copy.deepcopy(schema)
    next(f for f in changed["dimensionFieldSpecs"] if f["name"] == "country")["maxLength"] = 2048
    with pytest.raises(LivedashError) as exc:
        apply.apply_one(stack, changed, apply.load_table("aggregates", stack)[1], say=lambda _: None)
    assert "backward-incompatible" in str(exc.value) and "docs/operations.md" in str(exc.value)
    assert apply.apply_schema(stack, schema) == "unchanged"  # nothing was changed


def test_a_raw_table_gaining_a_computed_column_is_rebuilt_so_that_every_row_has_it(stack: Settings) -> None:
    # A consuming segment keeps a new column's default in every row it takes after the schema changed (reloaded
    # or not), so the table is rebuilt from its topic: every row then has ts_10s, the stitch's bucket of ts.
    suffix = uuid.uuid4().hex[:6]
    name = topic = f"bucketed_{suffix}"
    schema, table = apply.load_table("events_raw", stack)
    schema["schemaName"] = table["tableName"] = table["segmentsConfig"]["schemaName"] = name
    table["tableIndexConfig"]["streamConfigs"]["stream.kafka.topic.name"] = topic
    old_schema, old_table = copy.deepcopy(schema), copy.deepcopy(table)
    old_schema["dimensionFieldSpecs"] = [f for f in schema["dimensionFieldSpecs"] if f["name"] != "ts_10s"]
    del old_table["ingestionConfig"]
    old_table["tableIndexConfig"]["invertedIndexColumns"].remove("ts_10s")
    kafka.create_topics(kafka.kafka_admin(stack.kafka.bootstrap), {topic: 1})
    producer = Producer({"bootstrap.servers": stack.kafka.bootstrap})
    times = [1_800_000_000_000 + 3_333 * i for i in range(7)]
    for i, ts in enumerate(times):
        producer.produce(topic, value=orjson.dumps({"event_id": f"e{i}", "ts": ts, "type": "click", "user_id": "u"}))
    assert producer.flush(30) == 0
    said: list[str] = []
    try:
        apply.apply_one(stack, old_schema, old_table, say=said.append)
        assert wait_for(lambda: scalar(stack, f"SELECT COUNT(*) FROM {name}"), 7) == 7
        apply.apply_one(stack, schema, table, say=said.append)
        assert any("dropped to be created anew (new column ts_10s" in line for line in said), said
        assert wait_for(lambda: scalar(stack, f"SELECT COUNT(*) FROM {name}"), 7) == 7
        rows = query(stack, f'SELECT "ts", "ts_10s" FROM {name} ORDER BY "ts" LIMIT 100')
        assert [(int(ts), int(b)) for ts, b in rows] == [(ts, ts - ts % 10_000) for ts in times]
    finally:
        PinotClient.of(stack.pinot).drop(name)
