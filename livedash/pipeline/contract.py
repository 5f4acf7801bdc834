"""The event contract: parse and validate one raw Kafka message against config/pipeline.yaml. Pure.

An event is a flat JSON object:
    {"event_id": "...", "ts": 1764331200000, "type": "click", "user_id": "u42",
     "country": "DE", "device": "mobile", ..., "latency_ms": 83.0, "amount": 12.5}
Required: event_id, ts, type, user_id. Dimensions and metrics are optional; unknown fields are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

from livedash.pipeline.settings import EventContract

MISSING = "__none__"  # the value of a dimension an event does not carry
MAX_ID_LEN = 256
MAX_VALUE_LEN = 256


@dataclass(slots=True, frozen=True)
class Event:
    event_id: str
    ts: int  # event time, epoch milliseconds
    type: str
    user_id: str
    dims: dict[str, str]  # every declared dimension (MISSING when absent), including "type"
    metrics: dict[str, float]  # only the metrics the event carries


class Validator:
    """Parses bytes into an Event, or returns the reason it is invalid (a short English sentence)."""

    def __init__(self, contract: EventContract) -> None:
        self.contract = contract
        self.types = frozenset(contract.types)
        self.dimensions = tuple(d for d in contract.dimensions if d != "type")
        self.metrics = {name: (r.min, r.max) for name, r in contract.metrics.items()}
        self.allowed = frozenset(("event_id", "ts", "type", "user_id", *self.dimensions, *self.metrics))
        self.max_future_ms = int(contract.max_future_s * 1000)
        self.max_age_ms = int(contract.max_age_s * 1000)

    def parse(self, raw: bytes | None, ref_ms: int) -> Event | str:
        """ref_ms is the Kafka message's timestamp: the time reference for 'too far in the future' and 'too
        old', taken from the message itself so a replay classifies every message the same way."""
        if not raw:
            return "empty message"
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return f"invalid JSON: {str(exc)[:120]}"
        if not isinstance(obj, dict):
            return f"not a JSON object but {type(obj).__name__}"
        extra = obj.keys() - self.allowed
        if extra:
            return f"unknown field {sorted(extra)[0][:64]!r}"
        event_id = obj.get("event_id")
        if not isinstance(event_id, str) or not event_id or len(event_id) > MAX_ID_LEN:
            return _field_problem("event_id", event_id, "a non-empty string")
        user_id = obj.get("user_id")
        if not isinstance(user_id, str) or not user_id or len(user_id) > MAX_ID_LEN:
            return _field_problem("user_id", user_id, "a non-empty string")
        kind = obj.get("type")
        if not isinstance(kind, str):
            return _field_problem("type", kind, "a string")
        if kind not in self.types:
            return f"unknown type {kind[:64]!r}"
        ts = obj.get("ts")
        if type(ts) is not int:  # bool is an int subclass: refuse it too
            return _field_problem("ts", ts, "an integer (epoch milliseconds)")
        if ts > ref_ms + self.max_future_ms:
            return f"ts {ts} is more than {self.contract.max_future_s:.0f}s in the future"
        if ts < ref_ms - self.max_age_ms:
            return f"ts {ts} is more than {self.contract.max_age_s:.0f}s old"
        dims = {"type": kind}
        for name in self.dimensions:
            value = obj.get(name)
            if value is None:
                dims[name] = MISSING
            elif isinstance(value, str) and 0 < len(value) <= MAX_VALUE_LEN and value.isprintable():
                dims[name] = value
            else:
                return _field_problem(name, value, f"a printable string of 1-{MAX_VALUE_LEN} characters")
        metrics = {}
        for name, (low, high) in self.metrics.items():
            value = obj.get(name)
            if value is None:
                continue
            if type(value) not in (int, float) or not math.isfinite(value):
                return _field_problem(name, value, "a finite number")
            if not low <= value <= high:
                return f"{name} {value} is outside [{low:g}, {high:g}]"
            metrics[name] = float(value)
        return Event(event_id, ts, kind, user_id, dims, metrics)


def _field_problem(name: str, value: object, expected: str) -> str:
    if value is None:
        return f"missing field {name}"
    return f"{name} must be {expected}, got {type(value).__name__}"
