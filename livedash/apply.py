"""`livedash apply`: topics, Pinot schemas and tables from pinot/tables/<name>/, created or updated in place.

Idempotent: a second run changes nothing and says so. Every topic of kafka.topics is created first (with its
configured partition count) because Pinot's consumer needs its topic and upsert tables cannot follow a topic
that grows later.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

from livedash.config import PROJECT_ROOT, Settings
from livedash.errors import LivedashError
from livedash.kafka.admin import create_topics, kafka_admin
from livedash.output import Say
from livedash.pinot.client import PinotClient, PinotError
from livedash.wait import poll

TABLES_DIR = PROJECT_ROOT / "pinot" / "tables"


def load_table(name: str, settings: Settings, tables_dir: Path = TABLES_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, table config) with ${placeholders} filled from the settings."""
    folder = tables_dir / name
    if not folder.is_dir():
        raise LivedashError(f"pinot.tables names {name!r}, but {folder} does not exist")
    retention = settings.pipeline.retention
    values = {"kafka_bootstrap": settings.kafka.bootstrap, "recent_retention_h": str(retention.recent_h),
              "history_retention_h": str(retention.history_h), "live_retention_min": str(retention.live_min),
              "valid_topic": settings.pipeline.topics.valid or "(pipeline.topics.valid is off)"}  # fmt: skip
    schema = json.loads(Template((folder / "schema.json").read_text()).substitute(values))
    table = json.loads(Template((folder / "table.json").read_text()).substitute(values))
    if schema.get("schemaName") != name or table.get("tableName") != name:
        raise LivedashError(f"{folder}: schemaName and tableName must both be {name!r}")
    return schema, table


def is_subset(want: Any, have: Any) -> bool:
    """True when every key and value we declare is already in what Pinot returns (it adds defaults)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and is_subset(v, have[k]) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(map(is_subset, want, have))
    return want == have or str(want) == str(have)


def topic_of(table: dict[str, Any]) -> str | None:
    streams = table.get("tableIndexConfig", {}).get("streamConfigs", {})
    return streams.get("stream.kafka.topic.name")


def ensure_topic(settings: Settings, name: str, say: Say = print) -> None:
    wanted = settings.kafka.topic(name)
    admin = kafka_admin(settings.kafka.bootstrap)
    current = _partition_count(admin, name)
    configs = wanted.configs()
    if current is None:
        try:
            create_topics(admin, {name: wanted.partitions}, configs)
            say(f"topic {name}: created ({wanted.partitions} partitions)")
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            current = _partition_count(admin, name)
    if current is not None:
        if current != wanted.partitions:
            raise LivedashError(
                f"topic {name} has {current} partitions but kafka.topics declares {wanted.partitions}: "
                "Kafka cannot shrink a topic and growing one breaks keyed upserts; fix the config or "
                "delete and recreate the topic"
            )
        if configs and topic_configs(admin, name, list(configs)) != configs:
            changes = [ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                       for key, value in configs.items()]  # fmt: skip
            resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=changes)
            for future in admin.incremental_alter_configs([resource]).values():
                future.result()
            say(f"topic {name}: exists ({current} partitions), settings updated: {configs}")
        else:
            say(f"topic {name}: exists ({current} partitions)")


# Where a setting comes from when nobody set it on the topic (as kafka-python's "modified" filter reads them).
_DEFAULT_SOURCES = (ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, ConfigSource.STATIC_BROKER_CONFIG,
                    ConfigSource.DEFAULT_CONFIG)  # fmt: skip


def topic_configs(admin: AdminClient, name: str, keys: list[str]) -> dict[str, str]:
    """The topic's non-default settings among `keys`."""
    resource = ConfigResource(ResourceType.TOPIC, name)
    entries = admin.describe_configs([resource])[resource].result()
    return {key: entry.value for key, entry in entries.items() if key in keys and entry.value is not None
            and ConfigSource(entry.source) not in _DEFAULT_SOURCES}  # fmt: skip


def _partition_count(admin: AdminClient, name: str) -> int | None:
    try:
        topics = admin.list_topics(timeout=15).topics
    except KafkaException as exc:
        raise LivedashError(f"Kafka did not list its topics ({exc.args[0].str()}): run `livedash up`, then "
                            "`livedash status`") from exc  # fmt: skip
    meta = topics.get(name)
    if meta is None or meta.error is not None:
        return None
    return len(meta.partitions)


def wait_for_controller(settings: Settings, timeout_s: float = 60.0) -> None:
    if not poll(PinotClient.of(settings.pinot).controller_healthy, timeout_s, every_s=1.0):
        raise LivedashError(f"Pinot controller {settings.pinot.controller_url}/health is not healthy: run "
                            "`livedash up`, then `livedash status`")  # fmt: skip


class IncompatibleSchema(LivedashError):
    pass


_FIELD_KINDS = ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")


def _columns(schema: dict[str, Any]) -> list[str]:
    return [f["name"] for kind in _FIELD_KINDS for f in schema.get(kind, [])]


def retired_columns(schema: dict[str, Any], have: dict[str, Any]) -> list[str]:
    """Columns Pinot's schema holds that ours no longer declares (a release stopped writing them: Pinot cannot
    drop a column, and new rows leave it at its default)."""
    declared = set(_columns(schema))
    return [name for name in _columns(have) if name not in declared]


def _without(have: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    return {k: [f for f in v if f.get("name") not in columns] if k in _FIELD_KINDS else v for k, v in have.items()}


def apply_schema(settings: Settings, schema: dict[str, Any]) -> str:
    pinot = PinotClient.of(settings.pinot)
    name = schema["schemaName"]
    have = pinot.schema(name)
    retired = [] if have is None else retired_columns(schema, have)
    if have is not None and is_subset(schema, _without(have, retired)):
        return "unchanged"
    if have is not None and retired:  # they stay: a schema without a column Pinot holds is not backward-compatible
        kept = {k: [*schema.get(k, []), *(f for f in have[k] if f["name"] in retired)] for k in _FIELD_KINDS
                if any(f["name"] in retired for f in have.get(k, []))}  # fmt: skip
        schema = {**schema, **kept}
    try:
        pinot.post_schema(schema)
    except PinotError as exc:
        if "backward-compatible" in exc.detail:
            raise IncompatibleSchema(f"Pinot refuses the new schema of {name} as backward-incompatible (a "
                                     "column's type, length limit or default changed)") from None  # fmt: skip
        raise
    return "updated" if have is not None else "created"


def drop_table(settings: Settings, name: str, kind: str, timeout_s: float = 120.0) -> None:
    """Delete a table and its schema, and wait until Pinot has let go of both."""
    pinot = PinotClient.of(settings.pinot)
    pinot.delete_table(name, kind)
    if not poll(lambda: pinot.table(name, kind) is None, timeout_s, every_s=1.0):
        raise LivedashError(f"Pinot did not delete table {name}_{kind} within {timeout_s:.0f}s")
    # and until the server has dropped its segments: a table created anew before that names its first segments
    # as the old ones, whose late drop left the new table unserved (seen in tests/integration/test_apply.py)
    if not poll(lambda: f"{name}_{kind}" not in pinot.server_tables(), timeout_s, every_s=0.2):
        raise LivedashError(f"Pinot's server did not let go of table {name}_{kind} within {timeout_s:.0f}s")
    pinot.delete_schema(name)  # absent already: fine


def _rebuild_reason(settings: Settings, table: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """Why an existing table that reads a topic without upserts must be created anew (Pinot cannot move a
    table to another topic, nor take an incompatible schema), or None. Its rows all come back from the topic."""
    if "upsertConfig" in table:
        return None  # its rows depend on the order of their versions: never rebuilt behind the operator's back
    pinot = PinotClient.of(settings.pinot)
    name, kind = table["tableName"], table["tableType"].upper()
    current = pinot.table(name, kind)
    if current is None:
        return None
    if topic_of(current) != topic_of(table):
        return f"it read topic {topic_of(current)}, now {topic_of(table)}"
    have = pinot.schema(name)
    if have is not None and not is_subset(schema, have):
        wanted = {f["name"]: f for key in _FIELD_KINDS for f in schema.get(key, [])}
        for key in _FIELD_KINDS:
            for field in have.get(key, []):
                want = wanted.get(field["name"])
                if want is not None and not is_subset(want, field):
                    return f"column {field['name']} changed"
    if have is not None:
        # A consuming segment keeps a new column's default in the rows it takes after the schema changes (its
        # transforms were set when it started), and commits them so: only segments built anew compute it
        held = set(_columns(have))
        computed = [t["columnName"] for t in table.get("ingestionConfig", {}).get("transformConfigs", [])]
        for column in computed:
            if column not in held:
                return f"new column {column} is computed at ingestion"
    return None


def apply_table(settings: Settings, table: dict[str, Any]) -> str:
    pinot = PinotClient.of(settings.pinot)
    name, kind = table["tableName"], table["tableType"].upper()
    current = pinot.table(name, kind)
    if current is not None:
        # Pinot answers with the typed name (events_raw_REALTIME); compare the rest.
        if is_subset({**table, "tableName": current["tableName"]}, current):
            return "unchanged"
        pinot.put_table(name, table)
        return "updated"
    pinot.post_table(table)
    return "created"


def apply_all(settings: Settings, say: Say = print) -> None:
    for topic in settings.kafka.topics:
        ensure_topic(settings, topic.name, say)
    wait_for_controller(settings)
    for name in settings.pinot.tables:
        apply_one(settings, *load_table(name, settings), say=say)


def apply_one(settings: Settings, schema: dict[str, Any], table: dict[str, Any], say: Say = print) -> None:
    """One table and its schema: created, updated in place, or (a table without upserts whose topic or columns
    changed) dropped and created anew."""
    name, kind = table["tableName"], table["tableType"].upper()
    reason = _rebuild_reason(settings, table, schema)
    if reason:
        drop_table(settings, name, kind)
        say(f"table {name}_{kind}: dropped to be created anew ({reason}); its rows come back from the topic")
    try:
        changed = apply_schema(settings, schema)
    except IncompatibleSchema as exc:
        raise LivedashError(f"{exc}: this release stores {name} differently; start its data over as "
                            "docs/operations.md says (The dataflow: start the aggregates over)") from None  # fmt: skip
    say(f"schema {name}: {changed}")
    say(f"table {name}_{kind}: {apply_table(settings, table)}")
    if changed == "updated":
        # Segments already loaded read a new column only once reloaded (it gets its default value there)
        PinotClient.of(settings.pinot).reload_segments(name, kind)
        say(f"table {name}_{kind}: segments reloaded for the new schema")
