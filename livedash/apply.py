"""`livedash apply`: topics, Pinot schemas and tables from pinot/tables/<name>/, created or updated in place.

Idempotent: a second run changes nothing and says so. Every topic of kafka.topics is created first (with its
configured partition count) because Pinot's consumer needs its topic and upsert tables cannot follow a topic
that grows later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from string import Template
from typing import Any

import requests

from livedash.config import PROJECT_ROOT, Settings
from livedash.errors import LivedashError
from livedash.output import Say

TABLES_DIR = PROJECT_ROOT / "pinot" / "tables"


def load_table(name: str, settings: Settings, tables_dir: Path = TABLES_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema, table config) with ${placeholders} filled from the settings."""
    folder = tables_dir / name
    if not folder.is_dir():
        raise LivedashError(f"pinot.tables names {name!r}, but {folder} does not exist")
    retention = settings.pipeline.retention
    values = {"kafka_bootstrap": settings.kafka.bootstrap, "recent_retention_h": str(retention.recent_h),
              "history_retention_h": str(retention.history_h),
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
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    wanted = settings.kafka.topic(name)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap, client_id="livedash-apply", request_timeout_ms=15_000
    )
    try:
        current = _partition_count(admin, name)
        configs = wanted.configs()
        if current is None:
            try:
                admin.create_topics([NewTopic(name, wanted.partitions, 1, topic_configs=configs)])
                say(f"topic {name}: created ({wanted.partitions} partitions)")
            except TopicAlreadyExistsError:
                current = _partition_count(admin, name)
        if current is not None:
            if current != wanted.partitions:
                raise LivedashError(
                    f"topic {name} has {current} partitions but kafka.topics declares {wanted.partitions}: "
                    "Kafka cannot shrink a topic and growing one breaks keyed upserts; fix the config or "
                    "delete and recreate the topic"
                )
            if configs and _topic_configs(admin, name, list(configs)) != configs:
                from kafka.admin import ConfigResource, ConfigResourceType

                admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)])
                say(f"topic {name}: exists ({current} partitions), settings updated: {configs}")
            else:
                say(f"topic {name}: exists ({current} partitions)")
    finally:
        admin.close()


def _topic_configs(admin: Any, name: str, keys: list[str]) -> dict[str, str]:
    """The topic's non-default settings among `keys` (kafka-python 3: {type: {name: {key: {"value": ...}}}})."""
    from kafka.admin import ConfigResource, ConfigResourceType

    response = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    entries = response.get("topic", {}).get(name, {})
    return {key: entry["value"] for key, entry in entries.items() if key in keys}


def _partition_count(admin: Any, name: str) -> int | None:
    if name not in admin.list_topics():
        return None
    (meta,) = admin.describe_topics([name])
    return len(meta["partitions"])


def wait_for_controller(settings: Settings, timeout_s: float = 60.0) -> None:
    url = f"{settings.pinot.controller_url}/health"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url, timeout=3).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise LivedashError(f"Pinot controller {url} is not healthy: run `livedash up`, then `livedash status`")
        time.sleep(1)


def _call(method: str, url: str, **kwargs: Any) -> requests.Response:
    resp = requests.request(method, url, timeout=30, **kwargs)
    if resp.status_code >= 400:
        raise LivedashError(f"Pinot refused {method} {url}: {resp.status_code} {resp.text.strip()[:500]}")
    return resp


class IncompatibleSchema(LivedashError):
    pass


def apply_schema(settings: Settings, schema: dict[str, Any]) -> str:
    base = settings.pinot.controller_url
    name = schema["schemaName"]
    resp = requests.get(f"{base}/schemas/{name}", timeout=10)
    if resp.status_code == 200 and is_subset(schema, resp.json()):
        return "unchanged"
    existed = resp.status_code == 200
    answer = requests.post(f"{base}/schemas", params={"override": "true"}, json=schema, timeout=30)
    if answer.status_code >= 400 and "backward-compatible" in answer.text:
        raise IncompatibleSchema(f"Pinot refuses the new schema of {name} as backward-incompatible (a column's "
                                 "type, length limit or default changed)")  # fmt: skip
    if answer.status_code >= 400:
        raise LivedashError(f"Pinot refused POST {base}/schemas: {answer.status_code} {answer.text.strip()[:500]}")
    return "updated" if existed else "created"


def drop_table(settings: Settings, name: str, kind: str, timeout_s: float = 120.0) -> None:
    """Delete a table and its schema, and wait until Pinot has let go of both."""
    base = settings.pinot.controller_url
    _call("DELETE", f"{base}/tables/{name}", params={"type": kind.lower()})
    deadline = time.monotonic() + timeout_s
    while kind in requests.get(f"{base}/tables/{name}", params={"type": kind.lower()}, timeout=10).json():
        if time.monotonic() > deadline:
            raise LivedashError(f"Pinot did not delete table {name}_{kind} within {timeout_s:.0f}s")
        time.sleep(1)
    requests.delete(f"{base}/schemas/{name}", timeout=30)  # absent already: fine


def _rebuild_reason(settings: Settings, table: dict[str, Any], schema: dict[str, Any]) -> str | None:
    """Why an existing table that reads a topic without upserts must be created anew (Pinot cannot move a
    table to another topic, nor take an incompatible schema), or None. Its rows all come back from the topic."""
    if "upsertConfig" in table:
        return None  # its rows depend on the order of their versions: never rebuilt behind the operator's back
    base = settings.pinot.controller_url
    name, kind = table["tableName"], table["tableType"].upper()
    current = requests.get(f"{base}/tables/{name}", params={"type": kind.lower()}, timeout=10).json().get(kind)
    if current is None:
        return None
    if topic_of(current) != topic_of(table):
        return f"it read topic {topic_of(current)}, now {topic_of(table)}"
    have = requests.get(f"{base}/schemas/{name}", timeout=10)
    if have.status_code == 200 and not is_subset(schema, have.json()):
        wanted = {f["name"]: f for key in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs")
                  for f in schema.get(key, [])}  # fmt: skip
        for key in ("dimensionFieldSpecs", "metricFieldSpecs", "dateTimeFieldSpecs"):
            for field in have.json().get(key, []):
                want = wanted.get(field["name"])
                if want is not None and not is_subset(want, field):
                    return f"column {field['name']} changed"
    return None


def apply_table(settings: Settings, table: dict[str, Any]) -> str:
    base = settings.pinot.controller_url
    name, kind = table["tableName"], table["tableType"].upper()
    current = requests.get(f"{base}/tables/{name}", params={"type": kind.lower()}, timeout=10).json()
    if kind in current:
        # Pinot answers with the typed name (events_raw_REALTIME); compare the rest.
        if is_subset({**table, "tableName": current[kind]["tableName"]}, current[kind]):
            return "unchanged"
        _call("PUT", f"{base}/tables/{name}", json=table)
        return "updated"
    _call("POST", f"{base}/tables", json=table)
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
        _call("POST", f"{settings.pinot.controller_url}/segments/{name}/reload", params={"type": kind})
        say(f"table {name}_{kind}: segments reloaded for the new schema")
