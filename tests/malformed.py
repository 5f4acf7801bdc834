"""Messages the event contract must refuse, generated with hypothesis, for the fault suite and its unit test.

Every category of issue 5: invalid UTF-8, invalid JSON, wrong types, missing or extra fields, huge payloads,
NaN and infinity, timestamps far in the future or past, odd unicode (control characters refused; printable
oddities valid and counted), empty messages, and values out of range or unknown.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from hypothesis import assume
from hypothesis import strategies as st

NOW = int(time.time() * 1000)


def valid_event(i: int, **overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"event_id": f"v{i}", "ts": NOW - 60_000 + i % 50_000, "type": "click",
                             "user_id": f"u{i % 97}", "country": ["DE", "FR", "US"][i % 3],
                             "latency_ms": float(i % 40)}  # fmt: skip
    event.update(overrides)
    return event


_REQUIRED = ("event_id", "ts", "type", "user_id")
_KNOWN = {"event_id", "ts", "type", "user_id", "country", "device", "os", "page", "referrer", "campaign",
          "latency_ms", "amount"}  # fmt: skip
_ints = st.integers(-(2**63), 2**63 - 1)  # what JSON encoders (and Kafka producers in practice) send
# orjson writes an infinite float as null, and null is a valid optional dimension: finite only here
_finite_floats = st.floats(allow_nan=False, allow_infinity=False)
_containers = st.one_of(st.lists(_ints, max_size=3), st.dictionaries(st.text(max_size=3), _ints, max_size=2))
_WRONG = {  # per field, values of a type the contract refuses there
    "event_id": st.one_of(_ints, _finite_floats, st.booleans(), st.none(), _containers),
    "user_id": st.one_of(_ints, st.booleans(), st.none(), _containers),
    "type": st.one_of(_ints, st.booleans(), st.none(), _containers),
    "ts": st.one_of(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none(),
                    _containers),
    "country": st.one_of(_ints, _finite_floats, st.booleans(), _containers),
    "latency_ms": st.one_of(st.text(max_size=8), st.booleans(), _containers),
}  # fmt: skip
KINDS = ["utf8", "json", "type", "missing", "extra", "huge", "nan", "future", "past", "control", "empty",
         "not_object", "unknown_type", "out_of_range"]  # fmt: skip


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, bytes]:
    """A message the contract must refuse, by construction; the category says how it was broken."""
    kind = draw(st.sampled_from(KINDS))
    base = valid_event(draw(st.integers(0, 10**6)))
    body = orjson.dumps(base)
    if kind == "utf8":
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80abc"]))
        return kind, body[:-1] + b', "country": "' + bad + b'"}'
    if kind == "json":  # a cut-off object with text after it
        raw = body[: draw(st.integers(1, len(body) - 1))] + draw(st.text(max_size=20)).encode()
        try:
            orjson.loads(raw)
            assume(False)  # (rarely) valid JSON after all: not this case
        except orjson.JSONDecodeError:
            pass
        return kind, raw
    if kind == "type":
        field = draw(st.sampled_from(sorted(_WRONG)))
        base[field] = draw(_WRONG[field])
        return kind, orjson.dumps(base)
    if kind == "missing":
        del base[draw(st.sampled_from(_REQUIRED))]
        return kind, orjson.dumps(base)
    if kind == "extra":
        base[draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in _KNOWN))] = draw(_ints)
        return kind, orjson.dumps(base)
    if kind == "huge":  # over the 256-character limit of a dimension value, up to 200 KB
        base[draw(st.sampled_from(["country", "page", "event_id"]))] = "x" * draw(st.integers(300, 200_000))
        return kind, orjson.dumps(base)
    if kind == "nan":
        literal = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]))
        return kind, body[:-1] + b', "amount": ' + literal + b"}"
    if kind == "future":  # more than max_future_s (1 h) ahead of the message
        base["ts"] = NOW + draw(st.integers(2 * 3_600_000, 10**12))
        return kind, orjson.dumps(base)
    if kind == "past":  # more than max_age_s (7 days) behind
        base["ts"] = NOW - draw(st.integers(8 * 86_400_000, 10**13))
        return kind, orjson.dumps(base)
    if kind == "control":  # a control character in a dimension value
        base["country"] = draw(st.text(max_size=4)) + draw(st.characters(categories=["Cc"]))
        return kind, orjson.dumps(base)
    if kind == "empty":
        return kind, b""
    if kind == "not_object":
        return kind, orjson.dumps(draw(st.one_of(_containers, _ints, st.text(), st.none())))
    if kind == "unknown_type":
        base["type"] = draw(st.text(max_size=10).filter(lambda t: t not in ("page_view", "click", "purchase",
                                                                            "api_latency")))  # fmt: skip
        return kind, orjson.dumps(base)
    finite = {"allow_nan": False, "allow_infinity": False}
    base["latency_ms"] = draw(st.one_of(st.floats(max_value=-0.001, **finite),  # type: ignore[arg-type]
                                        st.floats(min_value=3_600_001, **finite)))  # type: ignore[arg-type]  # fmt: skip
    return kind, orjson.dumps(base)


@st.composite
def odd_unicode_valid(draw: st.DrawFn) -> dict[str, Any]:
    """Printable but unusual dimension values (emoji, right-to-left, combining marks, every kind of space,
    joiners and other format characters): valid, counted."""
    text = draw(st.text(st.characters(categories=["L", "M", "N", "S", "P", "Zs", "Cf"]), min_size=1, max_size=20))
    assume(text not in ("__all__", "__other__"))
    # Its own event_id: valid events that share one are duplicates (counted once), not what this is about.
    return valid_event(draw(st.integers(0, 10**6)), page=text, referrer=text[::-1] or "r",
                       event_id=f"odd-{uuid.uuid4().hex}")  # fmt: skip
