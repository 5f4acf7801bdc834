"""Reading back from Pinot in tests, through pinotdb as users and the dashboard do."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pinotdb import connect

from livedash.config import Settings


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    conn = connect(host=settings.pinot.host, port=settings.pinot.broker_port, path="/query/sql", scheme="http")
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return list(cur.fetchall())
    finally:
        conn.close()


def scalar(settings: Settings, sql: str) -> Any:
    rows = query(settings, sql)
    return rows[0][0] if rows else None


def wait_for(check: Callable[[], Any], expect: Any, timeout_s: float = 90.0, every_s: float = 1.0) -> Any:
    """Poll check() until it returns expect; returns the last value (so the caller asserts on it)."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # a broker still warming up answers with an error: retry until the deadline
            value = exc
        if value == expect:
            return value
        time.sleep(every_s)
    return value
