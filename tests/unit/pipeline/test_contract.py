"""One test per rule of the event contract (docs/events.md, "Rules"), on the shipped contract. No servers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from livedash import config
from livedash.pipeline.contract import Validator
from livedash.pipeline.rows import MISSING
from tests.conftest import ROOT

CONTRACT = config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline.events
NOW = 1_800_000_000_000


def base(**fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": "e1", "ts": NOW, "type": "click", "user_id": "u1"}
    event.update(fields)
    return {k: v for k, v in event.items() if v is not DROP}


DROP = object()


def parse(raw: bytes | dict[str, Any]) -> Any:
    """The verdict of parse() and of parse_batch() (alone and among valid events), which must agree."""
    data = raw if isinstance(raw, bytes) else orjson.dumps(raw)
    one = Validator(CONTRACT).parse(data, NOW)
    ok = orjson.dumps(base(event_id="other"))
    events, indices, invalid = Validator(CONTRACT).parse_batch([ok, data, ok], [NOW] * 3)
    if isinstance(one, str):
        assert invalid == [(1, one)] and indices == [0, 2]
    else:
        assert indices == [0, 1, 2] and not invalid
        fields = one.__struct_fields__
        assert events[1].__struct_fields__ == fields
        assert [getattr(events[1], f) for f in fields] == [getattr(one, f) for f in fields]
    return one


def refused(raw: bytes | dict[str, Any], words: str) -> None:
    verdict = parse(raw)
    assert isinstance(verdict, str), f"accepted: {raw!r}"
    assert words in verdict, verdict
    assert "\n" not in verdict


# -- the message -------------------------------------------------------------------------------------------


def test_an_empty_message_is_refused() -> None:
    refused(b"", "empty message")


def test_invalid_utf8_is_refused() -> None:
    refused(orjson.dumps(base())[:-1] + b',"country":"\xff"}', "UTF-8")


def test_a_message_that_is_not_a_json_object_is_refused() -> None:
    refused(b'{"event_id": "e1", "ts": ', "invalid JSON")
    refused(b"[1, 2]", "invalid event")
    refused(b'"click"', "invalid event")


def test_a_leading_byte_order_mark_is_ignored() -> None:
    event = parse(b"\xef\xbb\xbf" + orjson.dumps(base(country="DE")))
    assert not isinstance(event, str), event
    assert event.country == "DE"


def test_whitespace_around_the_object_is_ignored() -> None:
    assert not isinstance(parse(b"  \n" + orjson.dumps(base()) + b"\r\n"), str)


def test_an_unknown_field_is_refused() -> None:
    refused(base(colour="red"), "unknown field")


def test_a_field_given_twice_keeps_its_last_value() -> None:
    raw = orjson.dumps(base())[:-1] + b',"country":"DE","country":"FR"}'
    assert parse(raw).country == "FR"


# -- identifiers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["event_id", "user_id"])
def test_identifiers_are_required_non_empty_strings_of_at_most_256_characters(field: str) -> None:
    refused(base(**{field: DROP}), f"missing required field `{field}`")
    refused(base(**{field: ""}), field)
    refused(base(**{field: 7}), field)
    refused(base(**{field: None}), field)
    refused(base(**{field: "x" * 257}), field)
    longest = "😀" * 256  # 256 characters, 1,024 bytes of UTF-8
    assert getattr(parse(base(**{field: longest})), field) == longest


@pytest.mark.parametrize("field", ["event_id", "user_id"])
def test_identifiers_must_be_printable(field: str) -> None:
    refused(base(**{field: "a\x00b"}), "printable")
    assert not isinstance(parse(base(**{field: "ü ñ\u00a0x"})), str)


# -- ts and type ---------------------------------------------------------------------------------------------


def test_ts_is_an_integer_of_epoch_milliseconds() -> None:
    refused(base(ts=DROP), "missing required field `ts`")
    refused(base(ts=float(NOW) + 0.5), "ts")
    refused(base(ts=str(NOW)), "ts")
    refused(base(ts=True), "ts")


def test_ts_is_within_its_bounds_of_the_message_timestamp() -> None:
    hour, week = int(CONTRACT.max_future_s * 1000), int(CONTRACT.max_age_s * 1000)
    assert not isinstance(parse(base(ts=NOW + hour)), str)
    assert not isinstance(parse(base(ts=NOW - week)), str)
    refused(base(ts=NOW + hour + 1), "in the future")
    refused(base(ts=NOW - week - 1), "old")


def test_type_is_one_of_the_declared_types() -> None:
    refused(base(type="swipe"), "type")
    refused(base(type=DROP), "missing required field `type`")
    for kind in CONTRACT.types:
        assert parse(base(type=kind)).type == kind


# -- dimensions ----------------------------------------------------------------------------------------------


def test_an_absent_or_null_dimension_reads_none_as_in_the_rollups() -> None:
    assert parse(base()).country == MISSING
    assert parse(base(country=None)).country == MISSING
    assert parse(base(country=MISSING)).country == MISSING  # the same as absent


def test_a_dimension_value_has_1_to_256_characters_of_any_script() -> None:
    refused(base(country=""), "country")
    refused(base(page="é" * 257), "page")
    for longest in ("😀" * 256, "漢" * 256, "é" * 256, "e\u0301" * 128):  # 4-, 3- and 2-byte characters
        assert parse(base(page=longest)).page == longest


def test_printable_allows_every_space_and_joiner_but_no_control_character_or_line_separator() -> None:
    for fine in ("São Paulo", "a\u00a0b", "👩\u200d💻", "\u202eevil", "tab\u3000wide", "☃"):
        assert parse(base(country=fine)).country == fine
    for bad in ("a\tb", "a\nb", "x\x7f", "x\x85", "a\u2028b", "a\u2029b", "\x00"):
        refused(base(country=bad), "printable")


def test_a_dimension_that_is_not_a_string_is_refused() -> None:
    for wrong in (49, 4.5, True, ["DE"], {"c": "DE"}):
        refused(base(country=wrong), "country")


def test_the_rollups_own_values_are_reserved() -> None:
    refused(base(country="__other__"), "reserved")
    refused(base(device="__all__"), "reserved")
    assert parse(base(country="__others__")).country == "__others__"


# -- metrics -------------------------------------------------------------------------------------------------


def test_an_absent_or_null_metric_is_absent() -> None:
    assert parse(base()).latency_ms is None
    assert parse(base(latency_ms=None)).latency_ms is None


def test_a_metric_is_a_finite_number_within_its_range() -> None:
    r = CONTRACT.metrics["latency_ms"]
    assert parse(base(latency_ms=12)).latency_ms == 12.0  # an integer is a number
    assert parse(base(latency_ms=r.min)).latency_ms == r.min
    assert parse(base(latency_ms=r.max)).latency_ms == r.max
    refused(base(latency_ms=-0.5), "latency_ms")
    refused(base(latency_ms=r.max + 1), "latency_ms")
    refused(base(latency_ms="12"), "latency_ms")
    refused(base(latency_ms=True), "latency_ms")
    refused(orjson.dumps(base())[:-1] + b',"latency_ms":NaN}', "invalid JSON")
    refused(orjson.dumps(base())[:-1] + b',"latency_ms":1e999}', "latency_ms")
