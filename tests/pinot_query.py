"""Reading back from Pinot in tests, through the project's one client (livedash.pinot.client), as the dashboard
and verify do; and the waits for what Pinot shows."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from livedash.config import Settings
from livedash.pinot.client import PinotClient, Result
from livedash.wait import poll


@functools.cache
def client(broker_url: str, timeout_s: float) -> PinotClient:
    return PinotClient(broker_url, timeout_s=timeout_s, slack_s=0.0)


def answer(settings: Settings, sql: str, timeout_s: float = 10.0) -> Result:
    """Pinot's answer; a PinotError when Pinot fails, reports an exception or answers partly."""
    return client(settings.pinot.broker_url, timeout_s).query(sql, complete=True)


def query(settings: Settings, sql: str, timeout_s: float = 10.0) -> list[tuple[Any, ...]]:
    """Every row (see answer)."""
    return list(answer(settings, sql, timeout_s).rows)


def records(settings: Settings, sql: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every row as {column: value} (see answer)."""
    result = answer(settings, sql, timeout_s)
    return [dict(zip(result.columns, row, strict=True)) for row in result.rows]


def scalar(settings: Settings, sql: str) -> Any:
    rows = query(settings, sql)
    return rows[0][0] if rows else None


def attempt(check: Callable[[], Any]) -> Any:
    """check()'s value, or the exception it raised (a broker still warming up answers with an error)."""
    try:
        return check()
    except Exception as exc:
        return exc


def wait_for(check: Callable[[], Any], expect: Any, timeout_s: float = 90.0, every_s: float = 1.0) -> Any:
    """Poll check() until it returns expect; returns the last value (so the caller asserts on it). An error is a
    value too: retried until the deadline."""
    return poll(lambda: attempt(check), timeout_s, every_s, done=lambda value: value == expect)
