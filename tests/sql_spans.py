"""What a stitched statement reads, whichever way its WHERE says it (ranges, or a roll-up's window starts listed:
dashboard/stitch.py, spans_condition): the time ranges per roll-up ("" for raw events' "ts")."""

from __future__ import annotations

import re

from livedash.pipeline.settings import PipelineSettings

_PART = re.compile(r"\(\"rollup_name\" = '(\w+)' AND \(((?:[^()]|\([^()]*\))*)\)\)")
_RANGE = re.compile(r'"(?:window_start|ts)" >= (\d+) AND "(?:window_start|ts)" < (\d+)')
_LISTED = re.compile(r'"window_start" IN \(([\d, ]+)\)')
# A raw events' range may come with a list of 10 s buckets (pinot/tables/events_raw: ts_10s is round(ts,
# 10000)): only what is in both is read.
_RAW = re.compile(r'(?:"ts_10s" IN \(([\d, ]+)\) AND )?"ts" >= (\d+) AND "ts" < (\d+)')
BUCKET_MS = 10_000


def read_spans(text: str, pipeline: PipelineSettings) -> dict[str, list[tuple[int, int]]]:
    """Per roll-up of `pipeline`, the [lo, hi) ranges of window starts it reads, adjacent ones joined, hi
    a window boundary (a range ending mid-window takes the window starting before its end); raw events' under ""
    (a statement without a roll-up's name), to the millisecond."""
    sizes = {r.name: r.window.size_s * 1000 for r in pipeline.rollups}
    found: dict[str, list[tuple[int, int]]] = {}
    parts = _PART.findall(text) or [("", text)]
    for name, times in parts:
        size = sizes.get(name, 1)  # a range's end up to a window boundary: the same windows as its starts listed
        ranges = [(int(a), -(-int(b) // size) * size) for a, b in _RANGE.findall(times)] if name else []
        for listed in _LISTED.findall(times):
            ranges += [(int(t), int(t) + sizes[name]) for t in listed.split(", ")]
        for listed, a, b in [] if name else _RAW.findall(times):
            lo, hi = int(a), int(b)
            buckets = [(int(t), int(t) + BUCKET_MS) for t in listed.split(", ")] if listed else [(lo, hi)]
            ranges += [(max(lo, t), min(hi, e)) for t, e in buckets if max(lo, t) < min(hi, e)]
        joined: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if joined and joined[-1][1] == lo:
                joined[-1] = (joined[-1][0], hi)
            else:
                joined.append((lo, hi))
        found[name] = joined
    return found
