"""The one Pinot client: broker queries (rows, freshness, time used, partial answers) and the controller's REST
API (schemas, tables, ideal state and external view, segment reloads). Every failure is one PinotError with a
one-line message. QueryService adds the dashboard's per-process cache: results shared by all viewers, last good
results kept for when Pinot is down or slow.

The broker's JSON response is used directly (not a DB-API cursor) because it carries what the panels show
besides rows: `minConsumingFreshnessTimeMs` (how fresh the consuming segments are), time used, and whether
every server answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import requests
from cachetools import FIFOCache, TLRUCache

from livedash.config import PinotSettings
from livedash.errors import LivedashError


def one_line(text: object, limit: int) -> str:
    """`text` with every run of whitespace (newlines included) made one space, cut at `limit` characters."""
    return " ".join(str(text).split())[:limit]


class PinotError(LivedashError):
    """Pinot failed a call, said in one line. `reason` is the short cause: the transport error's type
    (ConnectionError, ReadTimeout, JSONDecodeError), "HTTP <status>" when Pinot refused the request, or
    "error <code>" when the broker ran the query and reported an exception (then `query_exception` is True).
    `detail` is what Pinot said: the exception's message, or the body of a refusal."""

    def __init__(self, message: str, reason: str = "", detail: str = "", query_exception: bool = False) -> None:
        super().__init__(one_line(message, 1000))
        self.reason = reason or str(self)
        self.detail = detail
        self.query_exception = query_exception


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
    groups_limit_reached: bool = False  # Pinot cut the groups at its numGroupsLimit: the rows are not all


class PinotClient:
    """A broker (and optionally a controller) over one HTTP session. Queries run with Pinot's own timeout
    `timeout_s` (queryOptions timeoutMs) and an HTTP timeout `slack_s` longer, so Pinot says it timed out."""

    def __init__(self, broker_url: str, timeout_s: float = 5.0, controller_url: str = "", slack_s: float = 1.0,
                 session: requests.Session | None = None, server_url: str = "") -> None:  # fmt: skip
        self.url = broker_url.rstrip("/") + "/query/sql"
        self.controller_url = controller_url.rstrip("/")
        self.server_url = server_url.rstrip("/")  # a server's admin API (server_tables)
        self.timeout_s = timeout_s
        self.slack_s = slack_s
        self.session = session or requests.Session()

    @classmethod
    def of(cls, pinot: PinotSettings, timeout_s: float = 5.0, slack_s: float = 1.0) -> PinotClient:
        """The configured broker and controller."""
        return cls(pinot.broker_url, timeout_s, pinot.controller_url, slack_s, server_url=pinot.server_url)

    # -- broker ------------------------------------------------------------------------------------------------

    def query(self, sql: str, complete: bool = False) -> Result:
        """Pinot's answer. complete: a partial answer (not every server responded) is a PinotError too."""
        options = f"timeoutMs={int(self.timeout_s * 1000)}"
        try:
            resp = self.session.request("POST", self.url, json={"sql": sql, "queryOptions": options},
                                        timeout=self.timeout_s + self.slack_s)  # fmt: skip
        except requests.Timeout as exc:
            raise PinotError(f"Pinot did not answer within {self.timeout_s:g}s", type(exc).__name__) from exc
        except requests.RequestException as exc:
            raise PinotError(f"Pinot is unreachable at {self.url}: {type(exc).__name__}", type(exc).__name__) from exc
        if resp.status_code != 200:
            raise PinotError(f"Pinot answered HTTP {resp.status_code}: {one_line(resp.text, 200)}",
                             f"HTTP {resp.status_code}", resp.text)  # fmt: skip
        body = _json(resp)
        if body.get("exceptions"):
            first = body["exceptions"][0]
            message = one_line(first.get("message"), 300)
            raise PinotError(f"Pinot error {first.get('errorCode')}: {message}", f"error {first.get('errorCode')}",
                             message, query_exception=True)  # fmt: skip
        table = body.get("resultTable") or {"dataSchema": {"columnNames": []}, "rows": []}
        freshness = body.get("minConsumingFreshnessTimeMs")
        partial = body.get("numServersResponded", 0) < body.get("numServersQueried", 0)
        if partial and complete:
            raise PinotError(f"Pinot answered partly (not every server responded) to: {one_line(sql, 200)}",
                             "partial answer")  # fmt: skip
        return Result(
            columns=tuple(table["dataSchema"]["columnNames"]),
            rows=tuple(tuple(r) for r in table["rows"]),
            fetched_at=time.time(),
            freshness_ms=int(freshness) if freshness and freshness > 0 else None,
            time_used_ms=int(body.get("timeUsedMs", 0)),
            partial=partial,
            groups_limit_reached=bool(body.get("numGroupsLimitReached")),
        )

    # -- controller --------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, timeout_s: float = 30.0, checked: bool = True,
                **kwargs: Any) -> requests.Response:  # fmt: skip
        """A controller call (`path` below the controller's URL). `checked`: an HTTP status of 400 or more is a
        PinotError ("Pinot refused ..."); unchecked, the caller reads the status. Unreachable: PinotError."""
        if not self.controller_url:
            raise PinotError("no Pinot controller URL given to this client")
        url = self.controller_url + path
        resp = self._send(method, url, "controller", timeout_s, **kwargs)
        if checked and resp.status_code >= 400:
            raise PinotError(f"Pinot refused {method} {url}: {resp.status_code} {one_line(resp.text, 500)}",
                             f"HTTP {resp.status_code}", resp.text)  # fmt: skip
        return resp

    def _send(self, method: str, url: str, role: str, timeout_s: float, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=timeout_s, **kwargs)
        except requests.RequestException as exc:
            raise PinotError(f"Pinot {role} is unreachable at {url}: {type(exc).__name__}",
                             type(exc).__name__) from exc  # fmt: skip

    def controller_healthy(self, timeout_s: float = 3.0) -> bool:
        try:
            return self.request("GET", "/health", timeout_s, checked=False).status_code == 200
        except PinotError:
            return False

    def schema(self, name: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """The schema as Pinot holds it, or None when Pinot answers anything but 200 (absent)."""
        resp = self.request("GET", f"/schemas/{name}", timeout_s, checked=False)
        return _json(resp) if resp.status_code == 200 else None

    def post_schema(self, schema: dict[str, Any], timeout_s: float = 30.0) -> None:
        """Create or replace (override=true) a schema."""
        self.request("POST", "/schemas", timeout_s, params={"override": "true"}, json=schema)

    def delete_schema(self, name: str, timeout_s: float = 30.0) -> None:
        """Absent already: fine (the status is not checked)."""
        self.request("DELETE", f"/schemas/{name}", timeout_s, checked=False)

    def table(self, name: str, kind: str, timeout_s: float = 10.0) -> dict[str, Any] | None:
        """The config of table `name` of `kind` (REALTIME or OFFLINE), or None when there is none."""
        resp = self.request("GET", f"/tables/{name}", timeout_s, checked=False, params={"type": kind.lower()})
        if resp.status_code != 200:
            return None
        config: dict[str, Any] | None = _json(resp).get(kind.upper())
        return config

    def post_table(self, table: dict[str, Any], timeout_s: float = 30.0) -> None:
        self.request("POST", "/tables", timeout_s, json=table)

    def put_table(self, name: str, table: dict[str, Any], timeout_s: float = 30.0) -> None:
        self.request("PUT", f"/tables/{name}", timeout_s, json=table)

    def delete_table(self, name: str, kind: str, timeout_s: float = 30.0, checked: bool = True) -> None:
        self.request("DELETE", f"/tables/{name}", timeout_s, checked=checked, params={"type": kind.lower()})

    def drop(self, name: str, kind: str = "REALTIME", timeout_s: float = 30.0) -> None:
        """Table `name` and its schema deleted, whether or not they exist (throwaway tables of tests, bench)."""
        self.delete_table(name, kind, timeout_s, checked=False)
        self.delete_schema(name, timeout_s)

    def reload_segments(self, name: str, kind: str, timeout_s: float = 30.0) -> None:
        """Reload the loaded segments (they read a new column only once reloaded)."""
        self.request("POST", f"/segments/{name}/reload", timeout_s, params={"type": kind})

    def server_tables(self, timeout_s: float = 10.0) -> list[str]:
        """The tables (with their type) the server holds: it lets go of a deleted one a second or so after the
        controller has forgotten it."""
        names: list[str] = _json(self._send("GET", self.server_url + "/tables", "server", timeout_s)).get("tables", [])
        return names

    def tables(self, timeout_s: float = 10.0) -> list[str]:
        names: list[str] = _json(self.request("GET", "/tables", timeout_s)).get("tables", [])
        return names

    def ideal_state(self, table: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """{kind: {segment: {server: state}}}: what the controller intends each server to serve."""
        return _json(self.request("GET", f"/tables/{table}/idealstate", timeout_s))

    def external_view(self, table: str, timeout_s: float = 10.0) -> dict[str, Any]:
        """The same shape as the ideal state: what each server serves now."""
        return _json(self.request("GET", f"/tables/{table}/externalview", timeout_s))


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body: dict[str, Any] = resp.json()
    except ValueError as exc:  # requests' JSONDecodeError
        raise PinotError(f"Pinot answered {resp.url} with no JSON: {one_line(resp.text, 200)}",
                         type(exc).__name__) from exc  # fmt: skip
    return body


@dataclass(frozen=True, slots=True)
class _Entry:
    result: Result
    expires: float  # on the service's clock


@dataclass
class QueryService:
    """Cached queries shared by every session of the process. A result is reused until `ttl_s` old; a failed
    query returns the last good result for the same SQL, marked stale, or raises when there is none."""

    run: Callable[[str], Result]
    clock: Callable[[], float] = time.monotonic
    max_entries: int = 5000  # statements and stitched pieces: one page of 12 panels keeps 300-600
    parallel: int = 4  # query_many's statements in flight at once (the broker and server share 2 cores here)
    # Each entry expires at its own time (a TTL per query); when full, the expired go first, then the least
    # recently used.
    _cache: TLRUCache[str, _Entry] = field(init=False)
    _last_good: FIFOCache[str, Result] = field(init=False)  # bounded: the oldest writes are dropped first
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._cache = TLRUCache(self.max_entries, ttu=lambda _sql, entry, _now: entry.expires, timer=self.clock)
        self._last_good = FIFOCache(self.max_entries)

    def query_many(self, statements: Sequence[tuple[str, str | None]], ttl_s: float,
                   fresh: bool = False) -> dict[str, Result | PinotError]:  # fmt: skip
        """Each (sql, panel) as query() answers it, or the PinotError it raised, by SQL text; the statements run
        concurrently, `parallel` at a time, each distinct text once. A page's panels are independent, and one
        after the other each waited for the broker's round trip and the others' turn on the server."""
        panels: dict[str, str | None] = {}
        for sql, panel in statements:
            panels.setdefault(sql, panel)  # in order; the first panel named for a text

        def one(sql: str) -> Result | PinotError:
            try:
                return self.query(sql, ttl_s, fresh, panels[sql])
            except PinotError as exc:
                return exc

        if len(panels) <= 1 or self.parallel <= 1:
            return {sql: one(sql) for sql in panels}
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="pinot-query")
            pool = self._pool
        return dict(zip(panels, pool.map(one, panels), strict=True))

    def kept(self, key: str) -> Result | None:
        """What keep() stored under `key`, until its TTL ends (a stitched panel's pieces)."""
        with self._lock:
            entry = self._cache.get("kept:" + key)
        return None if entry is None else entry.result

    def keep(self, key: str, result: Result, ttl_s: float) -> None:
        """`result` under `key` for ttl_s, beside the statements' results (bounded and evicted with them)."""
        with self._lock:
            self._cache["kept:" + key] = _Entry(result, self.clock() + ttl_s)

    def last_good(self, panel: str) -> Result | None:
        with self._lock:
            return self._last_good.get(panel)

    def remember(self, panel: str, result: Result) -> None:
        """`result` as the panel's last good one (what query() keeps for a panel by itself)."""
        with self._lock:
            self._last_good[panel] = result

    def query(self, sql: str, ttl_s: float, fresh: bool = False, panel: str | None = None) -> Result:
        """`panel` names what the rows are for, across time: a live panel's SQL changes with every step of its
        time range, and its last good rows are still the right thing to show while Pinot is down."""
        now = self.clock()
        last_key = panel or sql
        with self._lock:
            entry = self._cache.get(sql)
            if entry is not None and not fresh:
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
            self._cache[sql] = _Entry(result, now + ttl_s)  # from when it was asked
            self._last_good[last_key] = result  # written again: the newest stays longest
        return result
