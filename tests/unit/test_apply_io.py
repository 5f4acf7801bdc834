"""`livedash apply`'s calls, against a fake Kafka admin client and a fake Pinot controller: topics created with
their partitions and settings, an existing topic's settings brought back, schemas and tables created, updated
or left alone, refusals said in one line."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewTopic

from livedash import apply, config
from livedash.errors import LivedashError
from livedash.pinot.client import PinotError
from tests.unit.pinot.test_client import response as http_response

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = config.load(ROOT / "config" / "livedash.yaml", environ={})
CONTROLLER = SETTINGS.pinot.controller_url


def done(value: Any = None, error: BaseException | None = None) -> Future[Any]:
    future: Future[Any] = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
    return future


class FakeAdmin:
    """A broker's topics (name -> partitions) and their settings (name -> {key: ConfigEntry})."""

    def __init__(self, topics: dict[str, int], settings: dict[str, dict[str, ConfigEntry]] | None = None,
                 raced: bool = False) -> None:  # fmt: skip
        self.topics, self.settings, self.raced = topics, settings or {}, raced
        self.created: list[NewTopic] = []
        self.altered: list[tuple[str, dict[str, str | None], set[AlterConfigOpType | None]]] = []

    def list_topics(self, timeout: float) -> SimpleNamespace:
        meta = {
            name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(n))) for name, n in self.topics.items()
        }
        return SimpleNamespace(topics=meta)

    def create_topics(self, topics: list[NewTopic]) -> dict[str, Future[Any]]:
        out = {}
        for topic in topics:
            if self.raced:  # someone else created it between our look and our create
                self.topics[topic.topic] = topic.num_partitions
                out[topic.topic] = done(error=KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS)))
            else:
                self.created.append(topic)
                out[topic.topic] = done()
        return out

    def describe_configs(self, resources: list[ConfigResource]) -> dict[ConfigResource, Future[Any]]:
        return {r: done(self.settings.get(r.name, {})) for r in resources}

    def incremental_alter_configs(self, resources: list[ConfigResource]) -> dict[ConfigResource, Future[Any]]:
        for r in resources:
            entries = r.incremental_configs or []
            self.altered.append(
                (r.name, {e.name: e.value for e in entries}, {e.incremental_operation for e in entries})
            )
        return {r: done() for r in resources}


def entry(key: str, value: str, source: ConfigSource = ConfigSource.DYNAMIC_TOPIC_CONFIG) -> ConfigEntry:
    return ConfigEntry(key, value, source=source)


def ensure(admin: FakeAdmin, name: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(apply, "kafka_admin", lambda bootstrap: admin)
    said: list[str] = []
    apply.ensure_topic(SETTINGS, name, said.append)
    return said


def test_a_missing_topic_is_created_with_its_partitions_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin({})
    assert ensure(admin, "aggregates", monkeypatch) == ["topic aggregates: created (4 partitions)"]
    ((topic,),) = [admin.created]
    wanted = SETTINGS.kafka.topic("aggregates").configs()
    assert (topic.topic, topic.num_partitions, topic.replication_factor, topic.config) == ("aggregates", 4, 1, wanted)


def test_a_topic_created_meanwhile_is_checked_as_an_existing_one(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = FakeAdmin({}, raced=True)
    assert ensure(admin, "events_raw", monkeypatch) == ["topic events_raw: exists (4 partitions)"]


def test_an_existing_topic_keeps_its_settings_or_gets_them_back(monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = SETTINGS.kafka.topic("aggregates").configs()
    same = {k: entry(k, v) for k, v in wanted.items()} | {"flush.ms": entry("flush.ms", "1")}
    admin = FakeAdmin({"aggregates": 4}, {"aggregates": same})
    assert ensure(admin, "aggregates", monkeypatch) == ["topic aggregates: exists (4 partitions)"]
    assert admin.altered == [] and admin.created == []
    # A setting at the broker's default counts as not set on the topic: it is set again, and only ours are
    drifted = {**same, "segment.ms": entry("segment.ms", "600000", ConfigSource.DEFAULT_CONFIG)}
    admin = FakeAdmin({"aggregates": 4}, {"aggregates": drifted})
    assert ensure(admin, "aggregates", monkeypatch) == [
        f"topic aggregates: exists (4 partitions), settings updated: {wanted}"]  # fmt: skip
    assert admin.altered == [("aggregates", wanted, {AlterConfigOpType.SET})]


def test_a_topic_with_other_partitions_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LivedashError, match=r"has 2 partitions but kafka\.topics declares 4"):
        ensure(FakeAdmin({"events_raw": 2}), "events_raw", monkeypatch)


def test_a_kafka_that_does_not_answer_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    class Down(FakeAdmin):
        def list_topics(self, timeout: float) -> SimpleNamespace:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata"))

    with pytest.raises(LivedashError, match=r"Kafka did not list its topics \(Failed to get metadata\): run"):
        ensure(Down({}), "events_raw", monkeypatch)


def test_topic_configs_reads_only_the_asked_settings_set_on_the_topic() -> None:
    settings = {"t": {"cleanup.policy": entry("cleanup.policy", "delete", ConfigSource.DEFAULT_CONFIG),
                      "retention.ms": entry("retention.ms", "5"),
                      "segment.ms": entry("segment.ms", "7", ConfigSource.STATIC_BROKER_CONFIG),
                      "flush.ms": entry("flush.ms", "1")}}  # fmt: skip
    admin: Any = FakeAdmin({"t": 1}, settings)
    assert apply.topic_configs(admin, "t", ["cleanup.policy", "retention.ms", "segment.ms"]) == {"retention.ms": "5"}


# -- Pinot -------------------------------------------------------------------------------------------------------


def response(status: int, body: object) -> requests.Response:
    return http_response(status, body, CONTROLLER)


class FakeController(requests.Session):
    """Answers (method, path) from `routes`; every call is kept."""

    def __init__(self, routes: dict[tuple[str, str], requests.Response]) -> None:
        super().__init__()
        self.routes = routes
        self.calls: list[tuple[str, str]] = []
        self.bodies: list[Any] = []  # the JSON of each call that sent one

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        path = str(url).removeprefix(CONTROLLER)
        self.calls.append((str(method), path))
        if kwargs.get("json") is not None:
            self.bodies.append(kwargs["json"])
        return self.routes.get((str(method), path), response(200, {}))


def controller(monkeypatch: pytest.MonkeyPatch, routes: dict[tuple[str, str], requests.Response]) -> FakeController:
    fake = FakeController(routes)
    monkeypatch.setattr("livedash.pinot.client.requests.Session", lambda: fake)
    return fake


def test_a_schema_is_created_updated_or_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = {"schemaName": "s", "dimensionFieldSpecs": [{"name": "a", "dataType": "STRING"}]}
    fake = controller(monkeypatch, {("GET", "/schemas/s"): response(404, {"code": 404})})
    assert apply.apply_schema(SETTINGS, schema) == "created"
    assert fake.calls == [("GET", "/schemas/s"), ("POST", "/schemas")]
    held = {**schema, "dimensionFieldSpecs": [{"name": "a", "dataType": "STRING", "maxLength": 512}]}
    controller(monkeypatch, {("GET", "/schemas/s"): response(200, held)})
    assert apply.apply_schema(SETTINGS, schema) == "unchanged"
    controller(monkeypatch, {("GET", "/schemas/s"): response(200, {"schemaName": "s"})})
    assert apply.apply_schema(SETTINGS, schema) == "updated"


def test_a_column_no_longer_written_stays_in_pinot_and_is_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """A release that stops writing a column (quantile_kll, 2026-12-07) upgrades a table in place: Pinot refuses
    a schema without a column it holds as backward-incompatible, so the column stays and is not a change."""
    schema = {"schemaName": "s", "dimensionFieldSpecs": [{"name": "a", "dataType": "STRING"}]}
    held = {"schemaName": "s", "dimensionFieldSpecs": [{"name": "a", "dataType": "STRING"},
                                                      {"name": "old", "dataType": "BYTES"}]}  # fmt: skip
    assert apply.retired_columns(schema, held) == ["old"]
    fake = controller(monkeypatch, {("GET", "/schemas/s"): response(200, held)})
    assert apply.apply_schema(SETTINGS, schema) == "unchanged"
    assert fake.calls == [("GET", "/schemas/s")]
    grown = {**schema, "metricFieldSpecs": [{"name": "m", "dataType": "LONG"}]}  # a new column, and the old kept
    fake = controller(monkeypatch, {("GET", "/schemas/s"): response(200, held)})
    assert apply.apply_schema(SETTINGS, grown) == "updated"
    assert fake.bodies == [{**grown, "dimensionFieldSpecs": held["dimensionFieldSpecs"]}]


def test_a_refused_schema_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    incompatible = response(400, {"code": 400, "error": "New schema is not backward-compatible with the existing"})
    controller(monkeypatch, {("GET", "/schemas/s"): response(404, {}), ("POST", "/schemas"): incompatible})
    with pytest.raises(apply.IncompatibleSchema, match="backward-incompatible"):
        apply.apply_schema(SETTINGS, {"schemaName": "s"})
    controller(monkeypatch, {("GET", "/schemas/s"): response(404, {}), ("POST", "/schemas"): response(500, "boom")})
    with pytest.raises(PinotError) as exc:
        apply.apply_schema(SETTINGS, {"schemaName": "s"})
    assert str(exc.value) == f"Pinot refused POST {CONTROLLER}/schemas: 500 boom"


def test_a_table_is_created_updated_or_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    table = {"tableName": "t", "tableType": "REALTIME", "segmentsConfig": {"replication": "1"}}
    fake = controller(monkeypatch, {})
    assert apply.apply_table(SETTINGS, table) == "created"
    assert fake.calls == [("GET", "/tables/t"), ("POST", "/tables")]
    held = {"REALTIME": {**table, "tableName": "t_REALTIME", "segmentsConfig": {"replication": "1", "more": 1}}}
    controller(monkeypatch, {("GET", "/tables/t"): response(200, held)})
    assert apply.apply_table(SETTINGS, table) == "unchanged"
    fake = controller(monkeypatch, {("GET", "/tables/t"): response(200, {"REALTIME": {"tableName": "t_REALTIME"}})})
    assert apply.apply_table(SETTINGS, table) == "updated"
    assert fake.calls == [("GET", "/tables/t"), ("PUT", "/tables/t")]


def test_drop_table_waits_until_pinot_let_go_and_refusals_stop_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = controller(monkeypatch, {("GET", "/tables/t"): response(200, {})})
    apply.drop_table(SETTINGS, "t", "REALTIME")
    server = SETTINGS.pinot.server_url + "/tables"
    assert fake.calls == [("DELETE", "/tables/t"), ("GET", "/tables/t"), ("GET", server), ("DELETE", "/schemas/t")]
    # the server lets go of the table's segments after the controller: a table made anew before may go unserved
    held = {("GET", "/tables/t"): response(200, {}), ("GET", server): response(200, {"tables": ["t_REALTIME"]})}
    controller(monkeypatch, held)
    with pytest.raises(LivedashError, match="server did not let go of table t_REALTIME within 0s"):
        apply.drop_table(SETTINGS, "t", "REALTIME", timeout_s=0)
    controller(monkeypatch, {("DELETE", "/tables/t"): response(403, "no")})
    with pytest.raises(PinotError) as exc:
        apply.drop_table(SETTINGS, "t", "REALTIME")
    assert str(exc.value) == f"Pinot refused DELETE {CONTROLLER}/tables/t: 403 no"
    controller(monkeypatch, {("GET", "/tables/t"): response(200, {"REALTIME": {"tableName": "t_REALTIME"}})})
    with pytest.raises(LivedashError, match="did not delete table t_REALTIME within 0s"):
        apply.drop_table(SETTINGS, "t", "REALTIME", timeout_s=0)


def test_an_unhealthy_controller_says_what_to_run(monkeypatch: pytest.MonkeyPatch) -> None:
    controller(monkeypatch, {("GET", "/health"): response(503, "starting")})
    with pytest.raises(LivedashError, match="is not healthy: run `livedash up`"):
        apply.wait_for_controller(SETTINGS, timeout_s=0)
    controller(monkeypatch, {("GET", "/health"): response(200, "OK")})
    apply.wait_for_controller(SETTINGS, timeout_s=0)
