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
- Memory: at most `max_ids` ids per partition; past that the oldest buckets are forgotten early, so the horizon
  shortens under a flood instead of memory growing.

How they are held: the buckets the watermark is in or just behind keep their ids as strings in a set (new ids
go there; about 130 bytes an id with the set's and the bucket's share). An older bucket is sealed: its ids go
into numpy arrays shared by every sealed bucket, sorted by the ids' hash(): the hashes (8 bytes), the ids'
UTF-8 bytes (as wide as the longest sealed id) and their buckets (4 bytes), with a directory of the hashes' top
bits (2-4 bytes an id): about 50 bytes for a UUID. A batch's ids are looked up by their hashes (which the set
has cached on the strings already) with a few numpy operations per batch, and a hash found is confirmed on the
bytes, so the verdicts are exact. hash() differs between processes: the hashes are not snapshotted but
recomputed from the bytes on restore. Ids that numpy's fixed-width bytes would not keep exactly (a NUL
character, or over SEAL_MAX_BYTES) and late events of a sealed bucket stay strings in it. Measured
(docs/benchmarks.md, "The duplicate filter's ids sealed"): bench.memory's resident memory 718 -> 644 MB at 10
minutes and 830 -> 697 MB at 20, the snapshot's pickling 243 -> 100 ms, CPU unchanged within the noise.

A duplicate whose original's event time is further than the horizon behind the watermark is not recognised:
it is counted again (as a late correction, if its window is final). Every decision depends only on the
partition's messages, so a replay after a crash drops exactly the same events.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby
from operator import attrgetter, itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from livedash.pipeline.contract import Event, event_time

event_id = attrgetter("event_id")
NEVER = -(2**62)  # the cutoff before anything was forgotten
SEAL_MAX_BYTES = 64  # longer ids stay strings: one long id would widen every sealed id to its length
_FIRST, _SECOND = itemgetter(0), itemgetter(1)
_NO_IDS: npt.NDArray[np.bytes_] = np.array([], dtype="S1")
_NO_INTS: npt.NDArray[np.int32] = np.array([], dtype=np.int32)
_NO_KEYS: npt.NDArray[np.uint64] = np.array([], dtype=np.uint64)
_WINDOW = np.arange(16)  # keys of one directory slot compared at once


def bucket_ms(horizon_ms: int) -> int:
    return max(1000, horizon_ms // 10)


def _all_sealable(ids: list[str]) -> bool:
    """Usually so: one pass in C rather than a call per id."""
    joined = "".join(ids)
    longest = max(map(len, ids), default=0)  # characters: as many bytes if ASCII, at most 4 each otherwise
    return "\0" not in joined and longest * (1 if joined.isascii() else 4) <= SEAL_MAX_BYTES


def _sealable(eid: str) -> bool:
    # numpy's fixed-width bytes compare as if NUL-padded: "a" and "a\0" would be one id
    return "\0" not in eid and len(eid.encode()) <= SEAL_MAX_BYTES


class Dedup:
    """The remembered event_ids of one source partition, in buckets of event time: the recent buckets' as
    strings (`buckets`, every one of them in `seen`), the older ones' in the sealed arrays, sorted by hash:
    `sealed_keys`, `sealed_ids`, `sealed_of` (never changed in place: a snapshot holds them as they are);
    sealed_of is each id's bucket less `sealed_base` (32 bits, not 64)."""

    def __init__(self, horizon_s: float, max_ids: int) -> None:
        self.horizon_ms = int(horizon_s * 1000)
        self.bucket_ms = bucket_ms(self.horizon_ms)
        self.max_ids = max_ids
        self.buckets: dict[int, list[str]] = {}
        self.seen: set[str] = set()
        self.sealed_keys = _NO_KEYS  # hash() of the ids, as unsigned: sorted
        self.sealed_ids = _NO_IDS
        self.sealed_of = _NO_INTS
        self.sealed_base = 0
        self.shift = np.uint64(63)
        self.starts = np.zeros(3, dtype=np.int64)
        self.sealed: set[int] = set()  # the sealed buckets
        self.cutoff = NEVER  # buckets at or below this are forgotten
        self.dropped = 0  # duplicates dropped so far (kept in snapshots: the metric survives a restart)

    @property
    def enabled(self) -> bool:
        return self.horizon_ms > 0

    @property
    def remembered(self) -> int:
        return len(self.seen) + len(self.sealed_ids)

    def filter(self, events: list[Event], offsets: Sequence[int], watermark: int | None) -> tuple[
        list[Event], Sequence[int], int
    ]:  # fmt: skip
        """The events that are not duplicates, their offsets, and how many were dropped. watermark: the
        partition's watermark before these events. Fast path (no id remembered, none twice in the batch, no
        cap reached): set operations in C, one search of the sealed ids and one bulk insert; otherwise event by
        event, the same verdicts."""
        if not self.enabled or not events:
            return events, offsets, 0
        ids = list(map(event_id, events))
        in_sealed = self._in_sealed(ids)
        seen = self.seen
        if not in_sealed and seen.isdisjoint(ids) and self.remembered + len(ids) <= self.max_ids:
            before = len(seen)
            seen.update(ids)
            if len(seen) == before + len(ids):  # no id twice in the batch either: all of them are new
                times = list(map(event_time, events))
                self._remember_all(ids, times)
                top = max(times)
                watermark = top if watermark is None else max(watermark, top)
                self._forget_before(watermark)
                self._seal(watermark)
                return events, offsets, 0
            seen.difference_update(ids)  # they were all new: exactly as before, then event by event
        kept: list[Event] = []
        kept_at: list[int] = []
        sealed = self.sealed
        for event, offset, eid in zip(events, offsets, ids, strict=True):
            if eid in self.seen or in_sealed.get(eid) in sealed:  # (its sealed bucket may be forgotten by now)
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
        if watermark is not None:
            self._seal(watermark)
        dropped = len(events) - len(kept)
        self.dropped += dropped
        return kept, kept_at, dropped

    def advance(self, watermark: int) -> None:
        """The watermark moved without events (a watermark marker of a quiet partition)."""
        if self.enabled:
            self._forget_before(watermark)
            self._seal(watermark)

    def _in_sealed(self, ids: list[str]) -> dict[str, int]:
        """The ids among the sealed ones, and their buckets. A binary search over a million keys is some 20
        dependent cache misses an id; the directory (`starts`: where each value of a key's top bits begins)
        makes it two independent lookups, and the few keys of a slot are compared at once."""
        keys = self.sealed_keys
        if not len(keys):
            return {}
        wanted = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids)).view(np.uint64)
        slot = wanted >> self.shift
        lo, n = self.starts[slot], self.starts[slot + 1] - self.starts[slot]
        at = np.minimum(lo[:, None] + _WINDOW, len(keys) - 1)
        rows, cols = np.nonzero((keys[at] == wanted[:, None]) & (n[:, None] > _WINDOW))
        candidates = list(zip(rows.tolist(), (lo[rows] + cols).tolist(), strict=True))
        for i in np.flatnonzero(n > len(_WINDOW)).tolist():  # a slot fuller than the window: hardly ever
            candidates += [(i, j) for j in range(int(lo[i]) + len(_WINDOW), int(lo[i] + n[i])) if keys[j] == wanted[i]]
        out: dict[str, int] = {}
        for i, j in candidates:  # rare: duplicates, and a hash shared by chance
            if self.sealed_ids[j] == ids[i].encode():  # (bytes equality: a sealed id has no NUL to blur it)
                out[ids[i]] = int(self.sealed_of[j]) + self.sealed_base
        return out

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

    def _forget(self, gone: list[int]) -> None:
        for b in gone:
            ids = self.buckets.pop(b, None)
            if ids is not None:
                self.seen.difference_update(ids)
        if self.sealed.intersection(gone):
            self.sealed.difference_update(gone)
            keep = ~np.isin(self.sealed_of, np.array(gone) - self.sealed_base)
            self.sealed_keys, self.sealed_ids, self.sealed_of = (self.sealed_keys[keep], self.sealed_ids[keep],
                                                                 self.sealed_of[keep])  # fmt: skip
            self._index()

    def _forget_before(self, watermark: int) -> None:
        cut = (watermark - self.horizon_ms) // self.bucket_ms - 1
        if cut > self.cutoff:
            self._forget([b for b in (*self.buckets, *self.sealed) if b <= cut])
            self.cutoff = cut
        while len(self.seen) + len(self.sealed_ids) > self.max_ids:  # a flood: the oldest bucket goes early
            b = min((*self.buckets, *self.sealed))
            self._forget([b])
            self.cutoff = max(self.cutoff, b)

    def _seal(self, watermark: int) -> None:
        """Every bucket wholly behind the watermark's bucket and the one before it, not sealed yet, goes into
        the sealed ids (late events of a sealed bucket stay strings in it: no re-sealing per late event)."""
        below = watermark // self.bucket_ms - 1
        due = [b for b in self.buckets if b < below and b not in self.sealed]
        if not due:
            return
        strings: list[str] = []
        of: list[int] = []
        for b in due:
            held = self.buckets.pop(b)
            sealable = held if _all_sealable(held) else list(filter(_sealable, held))
            if len(sealable) < len(held):
                self.buckets[b] = [eid for eid in held if not _sealable(eid)]
            self.seen.difference_update(sealable)
            strings += sealable
            of += [b] * len(sealable)
            self.sealed.add(b)
        if strings:
            self._add_sealed(np.fromiter(map(hash, strings), dtype=np.int64, count=len(strings)).view(np.uint64),
                             np.array([eid.encode() for eid in strings]), np.array(of))  # fmt: skip

    def _add_sealed(self, keys: npt.NDArray[np.uint64], ids: npt.NDArray[np.bytes_],
                    of: npt.NDArray[np.int64]) -> None:  # fmt: skip
        """Merge ids (with their hashes and buckets, in any order) into the sealed arrays."""
        if not len(keys):
            return
        if not len(self.sealed_keys):
            self.sealed_base = int(of.min())
        order = np.argsort(keys, kind="stable")
        keys, ids, of = keys[order], ids[order], (of[order] - self.sealed_base).astype(np.int32)
        width = max(ids.itemsize, self.sealed_ids.itemsize)
        at = np.searchsorted(self.sealed_keys, keys)
        self.sealed_keys = np.insert(self.sealed_keys, at, keys)
        self.sealed_ids = np.insert(self.sealed_ids.astype(f"S{width}", copy=False), at, ids)
        self.sealed_of = np.insert(self.sealed_of, at, of)
        self._index()

    def _index(self) -> None:
        """The directory of the sealed keys: about two keys a slot."""
        bits = max(1, (len(self.sealed_keys) // 2).bit_length())
        self.shift = np.uint64(64 - bits)
        counts = np.bincount(self.sealed_keys >> self.shift, minlength=1 << bits)
        self.starts = np.concatenate(([0], np.cumsum(counts)))

    def snapshot(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "buckets": {b: list(ids) for b, ids in self.buckets.items()},
                "sealed": (sorted(self.sealed), self.sealed_ids, self.sealed_of, self.sealed_base),
                "dropped": self.dropped}  # fmt: skip

    @classmethod
    def restore(cls, horizon_s: float, max_ids: int, state: dict[str, Any]) -> Dedup:
        out = cls(horizon_s, max_ids)
        out.cutoff = state["cutoff"]
        out.buckets = {b: list(ids) for b, ids in state["buckets"].items()}
        out.seen = {eid for ids in out.buckets.values() for eid in ids}
        if "sealed" in state:  # snapshots before sealing had none
            buckets, ids, of, base = state["sealed"]
            out.sealed = set(buckets)
            keys = np.fromiter((hash(b.decode()) for b in ids.tolist()), dtype=np.int64, count=len(ids))
            out._add_sealed(keys.view(np.uint64), ids, of.astype(np.int64) + base)
        out.dropped = state["dropped"]
        return out
