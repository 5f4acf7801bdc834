"""The contract refuses every kind of malformed message, with a reason (hypothesis; no servers)."""

from __future__ import annotations

from collections import Counter

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from livedash import config
from livedash.pipeline.contract import Validator
from tests.conftest import ROOT
from tests.malformed import _WRONG as WRONG
from tests.malformed import KINDS, NOW, malformed, odd_unicode_valid, valid_event

CONTRACT = Validator(config.load(ROOT / "config" / "livedash.yaml", environ={}).pipeline.events)


def test_every_malformed_message_is_refused_with_a_reason() -> None:
    seen: Counter[str] = Counter()

    @settings(max_examples=3_000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(malformed())
    def refused(case: tuple[str, bytes]) -> None:
        kind, raw = case
        reason = CONTRACT.parse(raw, NOW)
        assert isinstance(reason, str) and reason, f"{kind} accepted: {raw[:200]!r}"
        seen[kind] += 1

    refused()
    assert set(seen) == set(KINDS), seen  # every kind was generated


@settings(max_examples=300, deadline=None, database=None)
@given(odd_unicode_valid())
def test_printable_odd_unicode_is_valid(event: dict[str, object]) -> None:
    parsed = CONTRACT.parse(orjson.dumps(event), NOW)
    assert not isinstance(parsed, str), parsed


@settings(max_examples=2_000, deadline=None, database=None)
@given(WRONG["country"] | WRONG["latency_ms"])
def test_wrong_optional_values_stay_non_null_on_the_wire(value: object) -> None:
    # orjson writes inf as null, and null is a valid optional value: CI once drew exactly that (country: inf)
    assert orjson.loads(orjson.dumps({"v": value}))["v"] is not None


@st.composite
def mixed_batch(draw: st.DrawFn) -> tuple[list[bytes | None], list[int]]:
    """A batch of valid events, malformed messages, printable oddities and empty (None) values, each message
    with its own Kafka timestamp near NOW."""
    values: list[bytes | None] = []
    for i in range(draw(st.integers(1, 40))):
        pick = draw(st.integers(0, 6))
        if pick == 0:
            values.append(draw(malformed())[1])
        elif pick == 1:
            values.append(orjson.dumps(draw(odd_unicode_valid())))
        elif pick == 2:
            values.append(None)
        elif pick == 3:  # valid, but only once normalized: a byte-order mark, a null dimension and metric
            values.append(b"\xef\xbb\xbf" + orjson.dumps(valid_event(i, country=None, latency_ms=None)))
        elif pick == 4:  # refused by the per-event checks, not the decoder
            values.append(orjson.dumps(valid_event(i, country=draw(st.sampled_from(["__other__", "a\u2028b"])))))
        else:
            values.append(orjson.dumps(valid_event(i)))
    stamps = [NOW + draw(st.integers(-5_000, 5_000)) for _ in values]
    return values, stamps


@settings(max_examples=600, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
@given(mixed_batch())
def test_a_batch_gets_the_same_verdicts_as_its_messages_one_by_one(batch: tuple[list[bytes | None], list[int]]) -> None:
    values, stamps = batch
    one_by_one = Validator(CONTRACT.contract)  # its own cache of seen values
    want = [one_by_one.parse(v, ts) for v, ts in zip(values, stamps, strict=True)]
    events, indices, invalid = Validator(CONTRACT.contract).parse_batch(values, stamps)
    assert indices == [i for i, w in enumerate(want) if not isinstance(w, str)]
    as_dicts = msgspec.structs.asdict  # each Validator defines its own Event type
    assert [as_dicts(e) for e in events] == [as_dicts(w) for w in want if not isinstance(w, str)]
    assert invalid == [(i, w) for i, w in enumerate(want) if isinstance(w, str)]


def test_a_batch_refuses_only_its_offending_events_when_others_pass() -> None:
    """The batch-wide checks fail, so the batch is checked event by event: only the culprits are refused."""
    validator = Validator(CONTRACT.contract)
    ok = [orjson.dumps(valid_event(i)) for i in range(5)]
    future = orjson.dumps(valid_event(5, ts=NOW + 2 * 3_600_000))
    control = orjson.dumps(valid_event(6, country="D\x07E"))
    events, indices, invalid = validator.parse_batch([*ok[:2], future, *ok[2:], control], [NOW] * 7)
    assert indices == [0, 1, 3, 4, 5]
    assert [e.event_id for e in events] == [f"v{i}" for i in range(5)]  # type: ignore[attr-defined]
    assert [i for i, _ in invalid] == [2, 6]
    assert "in the future" in invalid[0][1] and "printable" in invalid[1][1]


def test_the_ascii_fast_path_still_refuses_del_and_escaped_control_characters() -> None:
    """A batch of plain ASCII skips the per-value printable check, but DEL (0x7f) is ASCII, valid raw in JSON
    and not printable, and an escape can carry any control character: both must still be refused."""
    validator = Validator(CONTRACT.contract)
    ok = [orjson.dumps(valid_event(i)) for i in range(3)]
    with_del = orjson.dumps(valid_event(3, country="D\x7fE"))
    escaped = b'{"event_id":"v4","ts":%d,"type":"click","user_id":"u4","country":"D\\u0007E"}' % NOW
    for bad in (with_del, escaped):
        _, indices, invalid = validator.parse_batch([*ok, bad], [NOW] * 4)
        assert indices == [0, 1, 2] and [i for i, _ in invalid] == [3], bad
        assert "printable" in invalid[0][1]
    _, indices, invalid = validator.parse_batch(ok, [NOW] * 3)  # the fast path itself
    assert indices == [0, 1, 2] and not invalid
