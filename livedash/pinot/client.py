"""Pinot access for the dashboard: one HTTP session per process, results cached for all viewers, last good
results kept for when Pinot is down or slow.

The broker's JSON response is used directly (not a DB-API cursor) because it carries what the panels show
besides rows: `minConsumingFreshnessTimeMs` (how fresh the consuming segments are), time used, and whether
every server answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import requests

from livedash.errors import LivedashError


class PinotError(LivedashError):
    pass


@dataclass(frozen=True, slots=True)
class Result:
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    fetched_at: float  # epoch seconds when Pinot answered
    freshness_ms: int | None  # Pinot's minConsumingFreshnessTimeMs: data is complete up to this time
    time_used_ms: int
    partial: bool  # some server did not answer
    stale: bool = False  # Pinot failed; these are the last good rows
    error: str = ""  # why they are stale


class PinotClient:
    def __init__(self, broker_url: str, timeout_s: float = 5.0) -> None:
        self.url = broker_url.rstrip("/") + "/query/sql"
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def query(self, sql: str) -> Result:
        try:
            options = f"timeoutMs={int(self.timeout_s * 1000)}"
            resp = self.session.post(self.url, json={"sql": sql, "queryOptions": options}, timeout=self.timeout_s + 1)
        except requests.Timeout as exc:
            raise PinotError(f"Pinot did not answer within {self.timeout_s:g}s") from exc
        except requests.RequestException as exc:
            raise PinotError(f"Pinot is unreachable at {self.url}: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise PinotError(f"Pinot answered HTTP {resp.status_code}: {resp.text[:200]}")
        body = resp.json()
        if body.get("exceptions"):
            first = body["exceptions"][0]
            raise PinotError(f"Pinot error {first.get('errorCode')}: {str(first.get('message'))[:300]}")
        table = body.get("resultTable") or {"dataSchema": {"columnNames": []}, "rows": []}
        freshness = body.get("minConsumingFreshnessTimeMs")
        return Result(
            columns=tuple(table["dataSchema"]["columnNames"]),
            rows=tuple(tuple(r) for r in table["rows"]),
            fetched_at=time.time(),
            freshness_ms=int(freshness) if freshness and freshness > 0 else None,
            time_used_ms=int(body.get("timeUsedMs", 0)),
            partial=body.get("numServersResponded", 0) < body.get("numServersQueried", 0),
        )


@dataclass
class _Entry:
    result: Result
    expires: float


@dataclass
class QueryService:
    """Cached queries shared by every session of the process. A result is reused until `ttl_s` old; a failed
    query returns the last good result for the same SQL, marked stale, or raises when there is none."""

    run: Callable[[str], Result]
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _last_good: dict[str, Result] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    max_entries: int = 2000

    def query(self, sql: str, ttl_s: float, fresh: bool = False, panel: str | None = None) -> Result:
        """`panel` names what the rows are for, across time: a live panel's SQL changes with every step of its
        time range, and its last good rows are still the right thing to show while Pinot is down."""
        now = self.clock()
        last_key = panel or sql
        with self._lock:
            entry = self._cache.get(sql)
            if entry is not None and entry.expires > now and not fresh:
                return entry.result
        try:
            result = self.run(sql)
        except PinotError as exc:
            with self._lock:
                good = self._last_good.get(last_key)
            if good is None:
                raise
            return replace(good, stale=True, error=str(exc))
        with self._lock:
            if len(self._cache) >= self.max_entries:
                for key in [k for k, e in self._cache.items() if e.expires <= now]:
                    del self._cache[key]
            for store in (self._cache, self._last_good):  # bounded: drop the oldest insertions
                while len(store) >= self.max_entries:
                    del store[next(iter(store))]
            self._cache[sql] = _Entry(result, now + ttl_s)
            self._last_good.pop(last_key, None)
            self._last_good[last_key] = result  # re-inserted: the newest stays longest
        return result
