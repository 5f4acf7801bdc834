"""Duplicate events: an event whose event_id an earlier event of the same source partition had is dropped,
within a horizon of event time. Pure; one `Dedup` per source partition, snapshotted with its windows.

Producers that retry (mobile clients, at-least-once pipelines) send the same event twice; a user's events share
one partition (the raw topic is keyed by user_id), so duplicates meet in one place and need no exchange.

The rule (the same one `livedash verify` replays, see docs/events.md):
- The partition's watermark W is the highest event time of the events it kept (and of watermark markers).
- An event is remembered by its event_id in the bucket of its own event time, ts // B, with B = horizon / 10
  (at least 1 s). A bucket is forgotten once W - horizon has passed the bucket's end:
  bucket <= (W - horizon) // B - 1. So an id is remembered until W passes its event time by the horizon
  (plus up to one bucket).
- An event whose event_id is remembered is a duplicate: dropped, counted, it moves nothing (no watermark, no
  window). Otherwise it is kept, remembered (unless its bucket is already forgotten), and W moves on.
- Memory: at most `max_ids` ids per partition (about 100 bytes each with its string); past that the oldest
  buckets are forgotten early, so the horizon shortens under a flood instead of memory growing.

A duplicate whose original's event time is further than the horizon behind the watermark is not recognised:
it is counted again (as a late correction, if its window is final). Every decision depends only on the
partition's messages, so a replay after a crash drops exactly the same events.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any

from livedash.pipeline.contract import Event, event_time

event_id = attrgetter("event_id")
NEVER = -(2**62)  # the cutoff before anything was forgotten
_FIRST, _SECOND = itemgetter(0), itemgetter(1)


def bucket_ms(horizon_ms: int) -> int:
    return max(1000, horizon_ms // 10)


class Dedup:
    """The remembered event_ids of one source partition, in buckets of event time."""

    def __init__(self, horizon_s: float, max_ids: int) -> None:
        self.horizon_ms = int(horizon_s * 1000)
        self.bucket_ms = bucket_ms(self.horizon_ms)
        self.max_ids = max_ids
        self.buckets: dict[int, list[str]] = {}
        self.seen: set[str] = set()
        self.cutoff = NEVER  # buckets at or below this are forgotten
        self.dropped = 0  # duplicates dropped so far (kept in snapshots: the metric survives a restart)

    @property
    def enabled(self) -> bool:
        return self.horizon_ms > 0

    def filter(self, events: list[Event], offsets: Sequence[int], watermark: int | None) -> tuple[
        list[Event], Sequence[int], int
    ]:  # fmt: skip
        """The events that are not duplicates, their offsets, and how many were dropped. watermark: the
        partition's watermark before these events. Fast path (no id remembered, none twice in the batch, no
        cap reached): set operations in C and one bulk insert; otherwise event by event, the same verdicts."""
        if not self.enabled or not events:
            return events, offsets, 0
        ids = list(map(event_id, events))
        seen = self.seen
        if seen.isdisjoint(ids) and len(seen) + len(ids) <= self.max_ids:
            before = len(seen)
            seen.update(ids)
            if len(seen) == before + len(ids):  # no id twice in the batch either: all of them are new
                times = list(map(event_time, events))
                self._remember_all(ids, times)
                top = max(times)
                self._forget_before(top if watermark is None else max(watermark, top))
                return events, offsets, 0
            seen.difference_update(ids)  # they were all new: exactly as before, then event by event
        kept: list[Event] = []
        kept_at: list[int] = []
        for event, offset, eid in zip(events, offsets, ids, strict=True):
            if eid in self.seen:
                continue
            kept.append(event)
            kept_at.append(offset)
            ts = event.ts
            b = ts // self.bucket_ms
            if b > self.cutoff:
                self.buckets.setdefault(b, []).append(eid)
                self.seen.add(eid)
            watermark = ts if watermark is None else max(watermark, ts)
            self._forget_before(watermark)
        dropped = len(events) - len(kept)
        self.dropped += dropped
        return kept, kept_at, dropped

    def advance(self, watermark: int) -> None:
        """The watermark moved without events (a watermark marker of a quiet partition)."""
        if self.enabled:
            self._forget_before(watermark)

    def _remember_all(self, ids: list[str], times: list[int]) -> None:
        """Every id (already in seen) in its bucket; a forgotten bucket's ids leave seen again. Usually a
        batch's events all fall in one bucket (a tenth of the horizon): one extend."""
        b_ms, cutoff, buckets, seen = self.bucket_ms, self.cutoff, self.buckets, self.seen
        first, last = min(times) // b_ms, max(times) // b_ms
        if first == last:
            if first > cutoff:
                buckets.setdefault(first, []).extend(ids)
            else:
                seen.difference_update(ids)
            return
        for b, pairs in groupby(zip([t // b_ms for t in times], ids, strict=True), key=_FIRST):
            run = list(map(_SECOND, pairs))
            if b > cutoff:
                buckets.setdefault(b, []).extend(run)
            else:
                seen.difference_update(run)

    def _forget_before(self, watermark: int) -> None:
        cut = (watermark - self.horizon_ms) // self.bucket_ms - 1
        if cut > self.cutoff:
            for b in [b for b in self.buckets if b <= cut]:
                self.seen.difference_update(self.buckets.pop(b))
            self.cutoff = cut
        while len(self.seen) > self.max_ids:  # a flood: the oldest bucket goes early
            b = min(self.buckets)
            self.seen.difference_update(self.buckets.pop(b))
            self.cutoff = max(self.cutoff, b)

    def snapshot(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "buckets": {b: list(ids) for b, ids in self.buckets.items()},
                "dropped": self.dropped}  # fmt: skip

    @classmethod
    def restore(cls, horizon_s: float, max_ids: int, state: dict[str, Any]) -> Dedup:
        out = cls(horizon_s, max_ids)
        out.cutoff = state["cutoff"]
        out.buckets = {b: list(ids) for b, ids in state["buckets"].items()}
        out.seen = {eid for ids in out.buckets.values() for eid in ids}
        out.dropped = state["dropped"]
        return out
