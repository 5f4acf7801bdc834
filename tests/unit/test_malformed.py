"""The contract refuses every kind of malformed message, with a reason (hypothesis; no servers)."""

from __future__ import annotations

from collections import Counter

import orjson
from hypothesis import HealthCheck, given, settings

from livedash import config
from livedash.pipeline.contract import Validator
from tests.conftest import ROOT
from tests.malformed import _WRONG as WRONG
from tests.malformed import KINDS, NOW, malformed, odd_unicode_valid

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
