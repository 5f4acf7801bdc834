"""Watermark markers: how a quiet partition's event time moves on, written into the partition itself. Pure.

A partition without input for `idle_timeout_s` must still close its windows, so its watermark has to follow
the clock. Deciding that inside the dataflow would make the result depend on when the dataflow happened to
look: after a crash, a replay could fold an event into a window that the first run had already closed (and
published a late correction for), counting it twice. So the dataflow only *proposes* the advance: it appends a
marker message to the quiet partition, and the watermark moves when the marker is read back, at its offset.
Every run, and every replay, then sees the same events before and after the same advance.

A marker is keyed MARKER_KEY (reserved: producers must not use it) and carries a JSON body whose `type` starts
with "__livedash", which Pinot's events_raw table filters out at ingestion.
"""

from __future__ import annotations

import orjson

MARKER_KEY = b"__livedash.watermark__"
MARKER_TYPE = "__livedash_watermark__"


def marker_value(partition: int, watermark_ms: int) -> bytes:
    return orjson.dumps({"type": MARKER_TYPE, "ts": watermark_ms, "watermark_ms": watermark_ms, "partition": partition})


def parse_marker(value: bytes | None) -> int | None:
    """The watermark a marker carries, or None when the message is not a well-formed marker."""
    if not value:
        return None
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(body, dict) or body.get("type") != MARKER_TYPE:
        return None
    wm = body.get("watermark_ms")
    return wm if type(wm) is int else None
