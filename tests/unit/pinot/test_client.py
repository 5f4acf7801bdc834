"""The one Pinot client against a fake HTTP session: what it sends (URL, params, timeouts) and how every failure
becomes one PinotError with a one-line message."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from livedash.pinot.client import PinotClient, PinotError

BROKER, CONTROLLER = "http://127.0.0.1:8099", "http://127.0.0.1:9000"


def response(status: int, body: object, url: str = BROKER) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = (body if isinstance(body, str) else json.dumps(body)).encode()
    resp.url = url
    return resp


class FakeSession(requests.Session):
    """Answers each request with the next of `answers` (a Response, or an exception to raise); keeps the calls."""

    def __init__(self, *answers: requests.Response | Exception) -> None:
        super().__init__()
        self.answers = list(answers)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        self.calls.append((str(method), str(url), kwargs))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(*answers: requests.Response | Exception, timeout_s: float = 5.0, slack_s: float = 1.0) -> PinotClient:
    return PinotClient(BROKER, timeout_s, CONTROLLER, slack_s, session=FakeSession(*answers))


def calls(pinot: PinotClient) -> list[tuple[str, str, dict[str, Any]]]:
    assert isinstance(pinot.session, FakeSession)
    return pinot.session.calls


ANSWER = {
    "resultTable": {"dataSchema": {"columnNames": ["type", "n"]}, "rows": [["click", 3], ["view", 5]]},
    "minConsumingFreshnessTimeMs": 1_800_000_000_000,
    "timeUsedMs": 7,
    "numServersQueried": 1,
    "numServersResponded": 1,
}


def test_a_query_sends_pinots_timeout_and_waits_a_little_longer_for_the_answer() -> None:
    pinot = client(response(200, ANSWER), timeout_s=120, slack_s=10)
    result = pinot.query("SELECT 1")
    assert (result.columns, result.rows) == (("type", "n"), (("click", 3), ("view", 5)))
    assert (result.freshness_ms, result.time_used_ms, result.partial, result.groups_limit_reached) == (
        1_800_000_000_000, 7, False, False)  # fmt: skip
    ((method, url, kwargs),) = calls(pinot)
    assert (method, url) == ("POST", f"{BROKER}/query/sql")
    assert kwargs == {"json": {"sql": "SELECT 1", "queryOptions": "timeoutMs=120000"}, "timeout": 130}


def test_an_answer_without_a_result_table_has_no_rows_and_flags_say_what_pinot_left_out() -> None:
    body = {"numServersQueried": 2, "numServersResponded": 1, "numGroupsLimitReached": True}
    result = client(response(200, body)).query("SELECT 1")
    assert result.rows == () and result.partial and result.groups_limit_reached and result.freshness_ms is None
    with pytest.raises(PinotError, match="answered partly") as exc:
        client(response(200, body)).query("SELECT 1", complete=True)
    assert exc.value.reason == "partial answer"


def test_a_query_exception_is_one_line_with_pinots_code_and_message() -> None:
    body = {"exceptions": [{"errorCode": 190, "message": "TableDoesNotExistError:\n\tevents_raw"}]}
    with pytest.raises(PinotError) as exc:
        client(response(200, body)).query("SELECT 1")
    assert str(exc.value) == "Pinot error 190: TableDoesNotExistError: events_raw"
    assert exc.value.query_exception and exc.value.reason == "error 190"
    assert exc.value.detail == "TableDoesNotExistError: events_raw"


@pytest.mark.parametrize(
    ("answer", "message", "reason"),
    [
        (response(503, "Service\nUnavailable"), "Pinot answered HTTP 503: Service Unavailable", "HTTP 503"),
        (requests.ConnectionError("refused"), f"Pinot is unreachable at {BROKER}/query/sql: ConnectionError",
         "ConnectionError"),
        (requests.ReadTimeout("slow"), "Pinot did not answer within 5s", "ReadTimeout"),
        (response(200, "<html>"), f"Pinot answered {BROKER} with no JSON: <html>", "JSONDecodeError"),
    ],
)  # fmt: skip
def test_a_broker_that_fails_gives_one_pinot_error(answer: requests.Response | Exception, message: str,
                                                   reason: str) -> None:  # fmt: skip
    with pytest.raises(PinotError) as exc:
        client(answer).query("SELECT 1")
    assert (str(exc.value), exc.value.reason, exc.value.query_exception) == (message, reason, False)


def test_a_refusal_of_the_controller_names_the_call_and_keeps_pinots_whole_answer() -> None:
    body = {"code": 400, "error": "Schema is not backward-compatible " + "x" * 600}
    pinot = client(response(400, body, f"{CONTROLLER}/schemas"))
    with pytest.raises(PinotError) as exc:
        pinot.post_schema({"schemaName": "s"})
    assert str(exc.value).startswith(f"Pinot refused POST {CONTROLLER}/schemas: 400 " + '{"code": 400')
    assert len(str(exc.value)) < 600 and "backward-compatible" in exc.value.detail and exc.value.reason == "HTTP 400"
    ((method, url, kwargs),) = calls(pinot)
    assert (method, url, kwargs) == ("POST", f"{CONTROLLER}/schemas", {
        "timeout": 30.0, "params": {"override": "true"}, "json": {"schemaName": "s"}})  # fmt: skip


def test_absent_schemas_and_tables_are_none() -> None:
    pinot = client(response(404, {"code": 404}), response(200, {}), response(200, {"REALTIME": {"tableName": "t"}}))
    assert pinot.schema("s") is None
    assert pinot.table("t", "REALTIME") is None
    assert pinot.table("t", "realtime") == {"tableName": "t"}
    assert [(m, u, k.get("params"), k["timeout"]) for m, u, k in calls(pinot)] == [
        ("GET", f"{CONTROLLER}/schemas/s", None, 10.0),
        ("GET", f"{CONTROLLER}/tables/t", {"type": "realtime"}, 10.0),
        ("GET", f"{CONTROLLER}/tables/t", {"type": "realtime"}, 10.0),
    ]


def test_drop_deletes_the_table_and_its_schema_whether_or_not_they_exist() -> None:
    pinot = client(response(404, "no table"), response(404, "no schema"))
    pinot.drop("t", timeout_s=60)
    assert [(m, u, k.get("params"), k["timeout"]) for m, u, k in calls(pinot)] == [
        ("DELETE", f"{CONTROLLER}/tables/t", {"type": "realtime"}, 60),
        ("DELETE", f"{CONTROLLER}/schemas/t", None, 60),
    ]


def test_segment_states_and_an_unreachable_controller() -> None:
    ideal = {"OFFLINE": None, "REALTIME": {"seg0": {"server": "ONLINE"}}}
    pinot = client(response(200, {"tables": ["t"]}), response(200, ideal), response(200, ideal),
                   requests.ConnectionError("refused"))  # fmt: skip
    assert pinot.tables(timeout_s=5) == ["t"]
    assert pinot.ideal_state("t") == pinot.external_view("t") == ideal
    assert [u for _, u, _ in calls(pinot)] == [f"{CONTROLLER}/tables", f"{CONTROLLER}/tables/t/idealstate",
                                               f"{CONTROLLER}/tables/t/externalview"]  # fmt: skip
    assert not pinot.controller_healthy()
    with pytest.raises(PinotError, match="unreachable") as exc:
        client(requests.ConnectionError("refused")).tables()
    assert exc.value.reason == "ConnectionError"
    with pytest.raises(PinotError) as exc:
        client(response(500, "boom")).ideal_state("t")
    assert (str(exc.value), exc.value.reason) == (
        f"Pinot refused GET {CONTROLLER}/tables/t/idealstate: 500 boom",
        "HTTP 500",
    )


def test_a_plain_pinot_error_still_reads_as_its_message() -> None:
    exc = PinotError("Pinot is unreachable")
    assert (str(exc), exc.reason, exc.detail, exc.query_exception) == ("Pinot is unreachable",) * 2 + ("", False)


def test_each_cached_result_keeps_its_own_ttl() -> None:
    from livedash.pinot.client import QueryService, Result

    now = [0.0]
    answers = iter(range(100))

    def run(sql: str) -> Result:
        return Result(("n",), ((next(answers),),), fetched_at=0.0, freshness_ms=None, time_used_ms=1, partial=False)

    service = QueryService(run, clock=lambda: now[0])
    assert service.query("short", ttl_s=1).rows == ((0,),) and service.query("long", ttl_s=10).rows == ((1,),)
    now[0] = 5.0
    assert service.query("short", ttl_s=1).rows == ((2,),)  # expired
    assert service.query("long", ttl_s=10).rows == ((1,),)  # still shared
    now[0] = 10.0
    assert service.query("long", ttl_s=10).rows == ((3,),)  # expired at exactly its ttl


def test_many_statements_run_concurrently_each_text_once_and_failures_come_back_as_values() -> None:
    import threading

    from livedash.pinot.client import QueryService, Result

    calls: list[str] = []
    inside, most, lock = [0], [0], threading.Lock()
    gate = threading.Barrier(3, timeout=5)  # three distinct statements must be in flight together

    def run(sql: str) -> Result:
        with lock:
            calls.append(sql)
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        try:
            gate.wait()
            if sql == "bad":
                raise PinotError("Pinot error 150: bad query", "error 150", query_exception=True)
            return Result(("sql",), ((sql,),), fetched_at=0.0, freshness_ms=None, time_used_ms=1, partial=False)
        finally:
            with lock:
                inside[0] -= 1

    service = QueryService(run, parallel=4)
    got = service.query_many([("a", "panel a"), ("bad", "panel bad"), ("a", "panel a too"), ("c", None)], ttl_s=60)
    assert sorted(calls) == ["a", "bad", "c"] and most[0] == 3  # each text once, all at the same time
    assert list(got) == ["a", "bad", "c"]
    assert isinstance(got["bad"], PinotError) and "bad query" in str(got["bad"])
    assert not isinstance(got["a"], PinotError) and got["a"].rows == (("a",),)
    again = service.query_many([("a", "panel a"), ("c", None)], ttl_s=60)  # cached: no new call
    assert len(calls) == 3 and again["a"] == got["a"]
